// Command v3 shows etcdbalance spreading reads over an etcd cluster.
//
// By default it starts a 3-member etcd cluster in-process, writes -keys
// keys, reads them -reads times from -concurrency goroutines through a
// client built by etcdbalance.New, and prints the share of the reads that
// each member served. Reads go to the followers; the leader, which already
// carries every write, serves reads only when the followers are loaded
// far beyond it:
//
//	go run ./examples/v3 -reads 3000
//	member 127.0.0.1:20123 share 0.4990
//	member 127.0.0.1:20125 share 0.0000 leader
//	member 127.0.0.1:20127 share 0.5010
//
// With -endpoints it uses an existing cluster instead (it writes keys
// under -prefix and deletes them afterwards).
//
// The client logs the balancer's events (a member ejected, probed,
// restored, the leader changed...) to stderr with zap's development
// encoder, at Info. With -metrics-addr it serves the client's Prometheus
// metrics (package metrics) at /metrics there; with -hold it keeps reading,
// one key every 10 ms, for that long after the measured reads (or until
// interrupted), so that a member can be stopped or cut off and the client
// watched as it ejects and restores it:
//
//	go run ./examples/v3 -endpoints http://10.0.0.1:2379,http://10.0.0.2:2379 -metrics-addr :9100 -hold 10m
//	curl -s localhost:9100/metrics | grep etcdbalance_ejections_total
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/etcdbalance/etcdbalance-go/etcdbalance"
	"github.com/etcdbalance/etcdbalance-go/internal/etcdcluster"
	"github.com/etcdbalance/etcdbalance-go/metrics"
	"github.com/etcdbalance/etcdbalance-go/picker"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

type options struct {
	endpoints   []string
	members     int
	reads       int
	keys        int
	concurrency int
	prefix      string
	metricsAddr string
	hold        time.Duration
}

func parse(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("v3", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	eps := fs.String("endpoints", "", "comma-separated endpoints of an existing cluster (default: start one in-process)")
	fs.IntVar(&o.members, "members", 3, "members of the in-process cluster, 1..9")
	fs.IntVar(&o.reads, "reads", 1000, "number of reads")
	fs.IntVar(&o.keys, "keys", 100, "number of keys written, then read round the clock")
	fs.IntVar(&o.concurrency, "concurrency", 8, "reads in flight at once")
	fs.StringVar(&o.prefix, "prefix", "/etcdbalance-example/", "key prefix")
	fs.StringVar(&o.metricsAddr, "metrics-addr", "", "serve Prometheus metrics at http://ADDR/metrics (default: none)")
	fs.DurationVar(&o.hold, "hold", 0, "keep reading (one key every 10ms) this long after the measured reads")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *eps != "" {
		for _, e := range strings.Split(*eps, ",") {
			if e = strings.TrimSpace(e); e == "" {
				return o, fmt.Errorf("-endpoints %q has an empty entry", *eps)
			}
			o.endpoints = append(o.endpoints, e)
		}
	}
	switch {
	case o.members < 1 || o.members > 9:
		return o, fmt.Errorf("-members %d: want 1..9", o.members)
	case o.reads < 1:
		return o, fmt.Errorf("-reads %d: want at least 1", o.reads)
	case o.keys < 1:
		return o, fmt.Errorf("-keys %d: want at least 1", o.keys)
	case o.concurrency < 1:
		return o, fmt.Errorf("-concurrency %d: want at least 1", o.concurrency)
	case o.prefix == "":
		return o, errors.New("-prefix must not be empty")
	case o.hold < 0:
		return o, fmt.Errorf("-hold %v: want 0 or more", o.hold)
	}
	return o, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parse(args, stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "v3:", err)
		}
		return 2
	}
	if err := example(ctx, o, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "v3:", err)
		return 1
	}
	return 0
}

func example(ctx context.Context, o options, stdout, stderr io.Writer) (err error) {
	eps := o.endpoints
	if len(eps) == 0 {
		c, err := etcdcluster.Start(ctx, etcdcluster.Config{Size: o.members})
		if err != nil {
			return err
		}
		defer func() {
			if cerr := c.Close(); err == nil {
				err = cerr
			}
		}()
		eps = c.Endpoints()
	}

	// The balancer's events go to the log (New writes them through the
	// client's logger) and to the metrics collector.
	logger := zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()), zapcore.AddSync(stderr), zapcore.InfoLevel))
	col := metrics.New()
	cli, err := etcdbalance.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: logger},
		etcdbalance.WithPickerConfig(picker.Config{Events: col.Observe}))
	if err != nil {
		return err
	}
	defer cli.Close()
	if o.metricsAddr != "" {
		stopServing, err := serveMetrics(o.metricsAddr, col, stderr)
		if err != nil {
			return err
		}
		defer stopServing()
	}

	for i := 0; i < o.keys; i++ {
		if _, err := cli.Put(ctx, fmt.Sprintf("%s%06d", o.prefix, i), "value"); err != nil {
			return fmt.Errorf("writing keys: %w", err)
		}
	}
	defer cli.Delete(context.WithoutCancel(ctx), o.prefix, clientv3.WithPrefix())

	before, err := picksByMember(cli)
	if err != nil {
		return err
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, o.concurrency)
	for w := 0; w < o.concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(o.reads) {
					return
				}
				rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := cli.Get(rctx, fmt.Sprintf("%s%06d", o.prefix, i%int64(o.keys)))
				cancel()
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return fmt.Errorf("reading: %w", err)
	}
	after, err := picksByMember(cli)
	if err != nil {
		return err
	}
	view, err := etcdbalance.ClusterView(cli)
	if err != nil {
		return err
	}
	leader := view.Leader

	var total int64
	for _, e := range eps {
		total += after[trimScheme(e)] - before[trimScheme(e)]
	}
	for _, e := range eps {
		a := trimScheme(e)
		line := fmt.Sprintf("member %s share %.4f", a, float64(after[a]-before[a])/float64(total))
		if a == leader {
			line += " leader"
		}
		fmt.Fprintln(stdout, line)
	}
	if o.hold > 0 {
		hold(ctx, cli, o, stderr)
	}
	return nil
}

// serveMetrics serves col's metrics at http://addr/metrics until the
// returned func is called.
func serveMetrics(addr string, col *metrics.Collector, stderr io.Writer) (stop func(), err error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(col); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-metrics-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	fmt.Fprintf(stderr, "metrics at http://%s/metrics\n", ln.Addr())
	return func() {
		_ = srv.Close()
		<-done
	}, nil
}

// hold keeps reading, one key every 10 ms, for o.hold or until ctx ends.
// Failed reads are counted, not fatal: a member may be down on purpose.
func hold(ctx context.Context, cli *clientv3.Client, o options, stderr io.Writer) {
	hctx, cancel := context.WithTimeout(ctx, o.hold)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var reads, failed int
	for i := 0; ; i++ {
		select {
		case <-hctx.Done():
			fmt.Fprintf(stderr, "held: %d reads, %d failed\n", reads, failed)
			return
		case <-tick.C:
		}
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		_, err := cli.Get(rctx, fmt.Sprintf("%s%06d", o.prefix, i%o.keys))
		rcancel()
		reads++
		if err != nil && ctx.Err() == nil {
			failed++
		}
	}
}

// picksByMember reads the balancer's per-member pick counts, less the
// cluster view's Status probes: the reads between two readings are the
// ones the members served.
func picksByMember(cli *clientv3.Client) (map[string]int64, error) {
	st, err := etcdbalance.Stats(cli)
	if err != nil {
		return nil, err
	}
	view, err := etcdbalance.ClusterView(cli)
	if err != nil {
		return nil, err
	}
	m := make(map[string]int64, len(st))
	for _, s := range st {
		m[s.Addr] = s.Picks
	}
	for _, v := range view.Members {
		m[v.Addr] -= v.Probes
	}
	return m, nil
}

func trimScheme(e string) string {
	if i := strings.Index(e, "://"); i >= 0 {
		return e[i+3:]
	}
	return e
}
