// Command legacy-v2 reads from an etcd cluster through the etcd v2 client of
// the Kubernetes 1.7 era (github.com/coreos/etcd/client), built exactly the
// way apiserver 1.7's etcd2 storage factory builds it, but with the factory
// patch of examples/apiserver-v1.7 applied: the client's *http.Transport is
// wrapped in a v2compat.Transport. It then reports how many of the reads
// each member served, from the members' own store statistics.
//
//	legacy-v2 -endpoints http://10.0.0.1:2379,http://10.0.0.2:2379,http://10.0.0.3:2379
//
// With -stock the transport is not wrapped, for comparison: the client then
// pins one member and it serves every read.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	etcd2client "github.com/coreos/etcd/client"
)

func main() {
	endpoints := flag.String("endpoints", "http://127.0.0.1:2379", "comma-separated client URLs of the members")
	reads := flag.Int("reads", 1000, "number of Gets")
	conc := flag.Int("concurrency", 8, "Gets in flight at once")
	key := flag.String("key", "/legacy-v2/probe", "key to write once and then read")
	stockClient := flag.Bool("stock", false, "use the client without the balancing transport")
	flag.Parse()
	if *reads < 1 || *conc < 1 {
		log.Fatalf("-reads %d and -concurrency %d must be positive", *reads, *conc)
	}
	eps := strings.Split(*endpoints, ",")
	served, err := run(eps, *key, *reads, *conc, *stockClient)
	if err != nil {
		log.Fatal(err)
	}
	var total int64
	for _, s := range served {
		total += s
	}
	for i, ep := range eps {
		fmt.Fprintf(os.Stdout, "%s\t%5.1f%% of the store reads\n", ep, 100*float64(served[i])/float64(max(total, 1)))
	}
}

// run writes key, reads it n times with conc Gets in flight, and returns
// the store reads each member counted meanwhile. (An etcd 3.5 member counts
// two store Gets for each v2 read; only the shares matter.)
func run(eps []string, key string, n, conc int, stockClient bool) ([]int64, error) {
	tr, err := newTransportForETCD2("", "", "")
	if err != nil {
		return nil, err
	}
	defer tr.CloseIdleConnections()
	var c etcd2client.Client
	if stockClient {
		c, err = etcd2client.New(etcd2client.Config{Endpoints: eps, Transport: tr})
	} else {
		var release func()
		c, _, release, err = newETCD2Client(eps, "", "", "")
		if err == nil {
			defer release()
		}
	}
	if err != nil {
		return nil, err
	}
	kapi := etcd2client.NewKeysAPI(c)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := kapi.Set(ctx, key, "hello", nil); err != nil {
		return nil, err
	}
	before, err := storeGets(ctx, tr, eps)
	if err != nil {
		return nil, err
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		next     = make(chan struct{})
	)
	for g := 0; g < conc; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				if _, err := kapi.Get(ctx, key, nil); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	after, err := storeGets(ctx, tr, eps)
	if err != nil {
		return nil, err
	}
	for i := range after {
		after[i] -= before[i]
	}
	return after, nil
}

// storeGets asks each member directly how many Gets its store has served
// (GET /v2/stats/store, getsSuccess + getsFail). A plain v2 read is served
// by the member that received it, so the difference between two calls is
// the reads that member served.
func storeGets(ctx context.Context, rt http.RoundTripper, eps []string) ([]int64, error) {
	hc := &http.Client{Transport: rt}
	out := make([]int64, len(eps))
	for i, ep := range eps {
		req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimSuffix(ep, "/")+"/v2/stats/store", nil)
		if err != nil {
			return nil, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, err
		}
		var s struct {
			GetsSuccess int64 `json:"getsSuccess"`
			GetsFail    int64 `json:"getsFail"`
		}
		err = json.NewDecoder(resp.Body).Decode(&s)
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("%s/v2/stats/store: %v", ep, err)
		}
		out[i] = s.GetsSuccess + s.GetsFail
	}
	return out, nil
}
