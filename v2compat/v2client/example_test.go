package v2client_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"time"

	"go.etcd.io/etcd/client/v2"

	"github.com/etcdbalance/etcdbalance-go/v2compat"
	"github.com/etcdbalance/etcdbalance-go/v2compat/v2client"
)

// New in place of client.New: every Get goes to the member that is
// cheapest at that moment. The members here are stand-ins that answer one
// key; a real cluster is used the same way.
func ExampleNew() {
	var endpoints []string
	for i := 0; i < 3; i++ {
		m := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Etcd-Index", "7")
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"action":"get","node":{"key":"/greeting","value":"hello","modifiedIndex":7,"createdIndex":7}}`)
		}))
		defer m.Close()
		endpoints = append(endpoints, m.URL)
	}
	c, err := v2client.New(client.Config{
		Endpoints:               endpoints,
		Transport:               &http.Transport{MaxIdleConnsPerHost: 16},
		HeaderTimeoutPerRequest: 5 * time.Second,
	}, v2compat.WithLeaderPollInterval(-1)) // the stand-ins know no leader
	if err != nil {
		log.Fatal(err)
	}
	defer c.(*v2client.Client).Close()
	kapi := client.NewKeysAPI(c)
	for i := 0; i < 3; i++ {
		resp, err := kapi.Get(context.Background(), "/greeting", nil)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(resp.Node.Value)
	}
	fmt.Println("balanced:", c.(*v2client.Client).Transport().Stats().Requests)
	// Output:
	// hello
	// hello
	// hello
	// balanced: 3
}
