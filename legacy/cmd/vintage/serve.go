package main

import (
	"bufio"
	"fmt"
	"io"
	"log"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/etcd/clientv3"
	"golang.org/x/net/context"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// serve answers one request a line until "end", for the benchmark harness,
// which times each request itself. Requests, fields separated by spaces:
//
//	ID get TIMEOUT_MS KEY          serializable Get (1.7 reads with --etcd-quorum-read=false)
//	ID list TIMEOUT_MS PREFIX      serializable Get of the prefix
//	ID put TIMEOUT_MS KEY VALUE
//	ID watch PREFIX                a watch on a Watcher of its own, until "ID unwatch"
//
// Answers: "ID MEMBER ERROR" once per get, list and put, where MEMBER is
// the endpoint index (-1 if unknown) and ERROR is ok, deadline, canceled or
// a grpc code in lower case; "ID events N" as a watch receives events.
// Requests run concurrently, spread over the clients in turn.
func (d *driver) serve(sc *bufio.Scanner, w io.Writer) {
	var mu sync.Mutex
	out := bufio.NewWriter(w)
	answer := func(format string, args ...interface{}) {
		mu.Lock()
		fmt.Fprintf(out, format+"\n", args...)
		out.Flush()
		mu.Unlock()
	}
	var wg sync.WaitGroup
	watches := make(map[string]context.CancelFunc)
	next := 0
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 1 && f[0] == "end" {
			break
		}
		if len(f) < 3 {
			log.Fatalf("serve: bad request %q", sc.Text())
		}
		cli := d.clis[next%len(d.clis)]
		next++
		id, op := f[0], f[1]
		switch op {
		case "watch":
			ctx, cancel := context.WithCancel(context.Background())
			watches[id] = cancel
			wg.Add(1)
			go func() {
				defer wg.Done()
				d.watch(ctx, cli, f[2], func(n int) { answer("%s events %d", id, n) })
			}()
			continue
		case "unwatch":
			if cancel := watches[f[2]]; cancel != nil {
				cancel()
				delete(watches, f[2])
			}
			continue
		}
		ms, err := strconv.Atoi(f[2])
		if err != nil || len(f) < 4 {
			log.Fatalf("serve: bad request %q", sc.Text())
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(ms)*time.Millisecond)
			defer cancel()
			var id64 uint64
			var err error
			switch op {
			case "get", "list":
				opts := []clientv3.OpOption{clientv3.WithSerializable()}
				if op == "list" {
					opts = append(opts, clientv3.WithPrefix())
				}
				var resp *clientv3.GetResponse
				if resp, err = cli.Get(ctx, f[3], opts...); err == nil {
					id64 = resp.Header.MemberId
				}
			case "put":
				if len(f) < 5 {
					log.Fatalf("serve: bad request %q", sc.Text())
				}
				var resp *clientv3.PutResponse
				if resp, err = cli.Put(ctx, f[3], f[4]); err == nil {
					id64 = resp.Header.MemberId
				}
			default:
				log.Fatalf("serve: unknown operation %q", op)
			}
			member := -1
			if i, ok := d.index[id64]; ok && err == nil {
				member = i
			}
			answer("%s %d %s", id, member, errKind(err))
		}()
	}
	for _, cancel := range watches {
		cancel()
	}
	wg.Wait()
}

// watch keeps a watch open on prefix, on a Watcher of its own (one gRPC
// stream), until ctx ends, reporting the events it receives.
func (d *driver) watch(ctx context.Context, cli *clientv3.Client, prefix string, events func(int)) {
	w := clientv3.NewWatcher(cli)
	defer w.Close()
	for ctx.Err() == nil {
		for resp := range w.Watch(ctx, prefix, clientv3.WithPrefix()) {
			if n := len(resp.Events); n > 0 {
				events(n)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func errKind(err error) string {
	switch {
	case err == nil:
		return "ok"
	case err == context.DeadlineExceeded || grpc.Code(err) == codes.DeadlineExceeded:
		return "deadline"
	case err == context.Canceled:
		return "canceled"
	}
	if c := grpc.Code(err); c != codes.Unknown {
		return strings.ToLower(c.String())
	}
	return "other"
}
