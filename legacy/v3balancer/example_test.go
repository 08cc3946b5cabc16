package v3balancer_test

import (
	"log"

	"github.com/etcdbalance/etcdbalance-go/legacy/v3balancer"
	"google.golang.org/grpc"
)

// A grpc v1.0.4 connection balanced per call, outside clientv3. (Inside a
// Kubernetes 1.7 tree, the etcd3 patch of examples/apiserver-v1.7 does this
// wiring in clientv3 itself, and adds the Status function that lets the
// engine find the leader.)
func Example() {
	endpoints := []string{"http://10.0.0.1:2379", "http://10.0.0.2:2379", "http://10.0.0.3:2379"}
	conn, err := grpc.Dial("10.0.0.1:2379",
		grpc.WithInsecure(),
		grpc.WithBalancer(v3balancer.New(endpoints, "", nil)),
		grpc.WithUnaryInterceptor(v3balancer.UnaryInterceptor(nil)),
		grpc.WithStreamInterceptor(v3balancer.StreamInterceptor(nil)),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	// Calls on conn now go to the cheapest member that is up.
}
