// Command vintage drives the etcd v3 client of Kubernetes 1.7
// (github.com/coreos/etcd/clientv3 v3.1.5 on grpc v1.0.4) against a cluster,
// for the tests of this module and the benchmark harness. Built plainly it is
// the stock client; built with the overlay of package internal/vintage it is
// the patched one. A different grpc cannot share a binary with the harness,
// so the harness talks to this command over its stdin and stdout.
//
//	vintage build DIR                      build both drivers into DIR, print their paths
//	vintage -endpoints URL,... [-clients N] then one command a line on stdin:
//	  reads N CONC SERIALIZABLE TIMEOUT_MS  N Gets of one key per client, CONC at a time
//	  writes N CONC TIMEOUT_MS              N Puts per client
//	  serve                                 one request a line, for the harness (see serve.go)
//	  close                                 close the clients, look for leaked goroutines, exit
//
// Every command answers with one JSON line. Members are reported by their
// index in -endpoints, learned from the member ID in each response header.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/etcd/clientv3"
	"go.uber.org/goleak"
	"golang.org/x/net/context"

	"github.com/etcdbalance/etcdbalance-go/legacy/internal/vintage"
)

// batch is the answer to reads and writes.
type batch struct {
	OK     int     `json:"ok"`
	Errors int     `json:"errors"`
	Served []int   `json:"served"`  // per endpoint index, all clients
	Client [][]int `json:"clients"` // per client, per endpoint index
	Error  string  `json:"first_error,omitempty"`
}

type driver struct {
	clis  []*clientv3.Client
	index map[uint64]int // member ID -> endpoint index
	n     int
}

func main() {
	log.SetFlags(0)
	if len(os.Args) == 3 && os.Args[1] == "build" {
		b, err := vintage.Build(os.Args[2])
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(b.Stock)
		fmt.Println(b.Patched)
		return
	}
	endpoints := flag.String("endpoints", "", "comma-separated client URLs")
	clients := flag.Int("clients", 1, "clients, as separate clientv3.Client values (as an apiserver's storages are)")
	flag.Parse()
	eps := strings.Split(*endpoints, ",")
	d, err := open(eps, *clients)
	if err != nil {
		log.Fatal(err)
	}
	out := json.NewEncoder(os.Stdout)
	_ = out.Encode(map[string]interface{}{"ready": true})
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "reads", "writes":
			_ = out.Encode(d.batch(f))
		case "serve":
			d.serve(sc, os.Stdout)
		case "close":
			_ = out.Encode(d.close())
			return
		default:
			log.Fatalf("unknown command %q", f[0])
		}
	}
	d.closeClients()
}

func open(eps []string, n int) (*driver, error) {
	d := &driver{index: make(map[uint64]int), n: len(eps)}
	for i := 0; i < n; i++ {
		cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
		if err != nil {
			return nil, err
		}
		d.clis = append(d.clis, cli)
	}
	// Status(ctx, endpoint) dials that endpoint alone: once per member, at
	// start, to map member IDs to endpoints.
	for i, ep := range eps {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := d.clis[0].Status(ctx, ep)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("status of %s: %v", ep, err)
		}
		d.index[st.Header.MemberId] = i
	}
	return d, nil
}

func atoi(f []string, i int) int {
	if i >= len(f) {
		log.Fatalf("%s: missing argument %d", f[0], i)
	}
	n, err := strconv.Atoi(f[i])
	if err != nil {
		log.Fatalf("%s: %v", f[0], err)
	}
	return n
}

func (d *driver) batch(f []string) batch {
	n, conc := atoi(f, 1), atoi(f, 2)
	var serializable bool
	var timeout time.Duration
	if f[0] == "reads" {
		serializable = atoi(f, 3) != 0
		timeout = time.Duration(atoi(f, 4)) * time.Millisecond
	} else {
		timeout = time.Duration(atoi(f, 3)) * time.Millisecond
	}
	res := batch{Served: make([]int, d.n), Client: make([][]int, len(d.clis))}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for c, cli := range d.clis {
		res.Client[c] = make([]int, d.n)
		jobs := make(chan int)
		for w := 0; w < conc; w++ {
			wg.Add(1)
			go func(c int, cli *clientv3.Client) {
				defer wg.Done()
				for j := range jobs {
					member, err := d.one(cli, f[0] == "writes", serializable, timeout, j)
					mu.Lock()
					if err != nil {
						res.Errors++
						if res.Error == "" {
							res.Error = err.Error()
						}
					} else {
						res.OK++
						if member >= 0 {
							res.Served[member]++
							res.Client[c][member]++
						}
					}
					mu.Unlock()
				}
			}(c, cli)
		}
		go func() {
			for j := 0; j < n; j++ {
				jobs <- j
			}
			close(jobs)
		}()
	}
	wg.Wait()
	return res
}

// one sends one request and returns the index of the member that answered.
func (d *driver) one(cli *clientv3.Client, write, serializable bool, timeout time.Duration, j int) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var id uint64
	if write {
		resp, err := cli.Put(ctx, "vintage/w", strconv.Itoa(j))
		if err != nil {
			return -1, err
		}
		id = resp.Header.MemberId
	} else {
		var opts []clientv3.OpOption
		if serializable {
			opts = append(opts, clientv3.WithSerializable())
		}
		resp, err := cli.Get(ctx, "vintage/r", opts...)
		if err != nil {
			return -1, err
		}
		id = resp.Header.MemberId
	}
	if i, ok := d.index[id]; ok {
		return i, nil
	}
	return -1, nil
}

func (d *driver) closeClients() {
	for _, cli := range d.clis {
		cli.Close()
	}
	d.clis = nil
}

func (d *driver) close() map[string]interface{} {
	d.closeClients()
	leaks := ""
	if err := goleak.Find(); err != nil {
		leaks = err.Error()
	}
	return map[string]interface{}{"closed": true, "leaks": leaks}
}
