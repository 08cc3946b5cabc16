package v2compat_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"

	"go.etcd.io/etcd/client/v2"

	"github.com/etcdbalance/etcdbalance-go/v2compat"
)

// fakeMember stands in for an etcd member in this example; a real cluster
// is used the same way.
func fakeMember() *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v2/keys/greeting" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("X-Etcd-Index", "4")
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"action":"get","node":{"key":"/greeting","value":"hello","modifiedIndex":4,"createdIndex":4}}`)
	}))
}

// Wrap the *http.Transport an etcd v2 client would use, and give the same
// endpoints to both.
func Example() {
	var endpoints []string
	for i := 0; i < 3; i++ {
		m := fakeMember()
		defer m.Close()
		endpoints = append(endpoints, m.URL)
	}

	inner := &http.Transport{} // the transport the program used before
	defer inner.CloseIdleConnections()
	// Hedged reads are optional: here a slow read is sent to a second
	// member once more, for at most 5% more reads.
	tr, err := v2compat.New(inner, endpoints, v2compat.WithHedgedReads(0.05))
	if err != nil {
		log.Fatal(err)
	}
	defer tr.Close()

	c, err := client.New(client.Config{Endpoints: endpoints, Transport: tr})
	if err != nil {
		log.Fatal(err)
	}
	kapi := client.NewKeysAPI(c)
	for i := 0; i < 3; i++ {
		resp, err := kapi.Get(context.Background(), "/greeting", nil)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(resp.Node.Value, resp.Index)
	}
	fmt.Println("balanced requests:", tr.Stats().Requests)
	// Output:
	// hello 4
	// hello 4
	// hello 4
	// balanced requests: 3
}
