package etcdbalance_test

import (
	"context"
	"fmt"
	"log"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbalance/etcdbalance-go/etcdbalance"
	"github.com/etcdbalance/etcdbalance-go/internal/etcdcluster"
)

// New is a drop-in for clientv3.New: the client it returns is a plain
// *clientv3.Client whose every call goes to the member that is cheapest
// now. Stats shows how the calls were spread.
func Example() {
	// An in-process 3-member cluster stands in for a real one.
	cluster, err := etcdcluster.Start(context.Background(), etcdcluster.Config{Size: 3})
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()

	cli, err := etcdbalance.New(clientv3.Config{
		Endpoints:   cluster.Endpoints(),
		DialTimeout: 5 * time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "greeting", "hello"); err != nil {
		log.Fatal(err)
	}
	for range 30 {
		if _, err := cli.Get(ctx, "greeting", clientv3.WithSerializable()); err != nil {
			log.Fatal(err)
		}
	}
	resp, err := cli.Get(ctx, "greeting")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(resp.Kvs[0].Value))

	stats, err := etcdbalance.Stats(cli)
	if err != nil {
		log.Fatal(err)
	}
	var picks int64
	for _, s := range stats {
		picks += s.Picks // s.Addr, s.InFlight, s.Estimate, s.Ejected...
	}
	fmt.Printf("%d members, every call picked by the engine: %v\n", len(stats), picks >= 32)
	// Output:
	// hello
	// 3 members, every call picked by the engine: true
}
