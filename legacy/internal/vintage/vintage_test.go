package vintage

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/etcdbalance/etcdbalance-go/internal/v2cluster"
	"go.uber.org/goleak"
)

// These tests run the real clientv3 v3.1.5 (grpc v1.0.4), stock and with the
// etcd3 patch applied, against five real etcd 3.5 member processes, each
// behind a fault proxy. Each client setup is three clientv3.Client values in
// one process, as the storages of one apiserver are.

func TestMain(m *testing.M) {
	code := m.Run()
	if bins.dir != "" {
		os.RemoveAll(bins.dir)
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

var bins struct {
	once sync.Once
	dir  string
	b    Binaries
	err  error
}

func binaries(t *testing.T) Binaries {
	t.Helper()
	bins.once.Do(func() {
		bins.dir, bins.err = os.MkdirTemp("", "vintage-")
		if bins.err == nil {
			bins.b, bins.err = Build(bins.dir)
		}
	})
	if bins.err != nil {
		t.Fatal(bins.err)
	}
	return bins.b
}

const (
	members = 5
	clients = 3
)

type batch struct {
	OK     int     `json:"ok"`
	Errors int     `json:"errors"`
	Served []int   `json:"served"`
	Client [][]int `json:"clients"`
	Error  string  `json:"first_error"`
}

// driver is one running vintage process.
type driver struct {
	t   *testing.T
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func startDriver(t *testing.T, bin string, c *v2cluster.Cluster) *driver {
	t.Helper()
	cmd := exec.Command(bin, "-endpoints", strings.Join(c.Endpoints(), ","), "-clients", fmt.Sprint(clients))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &driver{t: t, cmd: cmd, in: in, out: bufio.NewScanner(out)}
	d.out.Buffer(make([]byte, 1<<16), 1<<20)
	t.Cleanup(func() {
		in.Close()
		_ = cmd.Wait()
	})
	var ready map[string]interface{}
	d.read(&ready)
	return d
}

func (d *driver) read(v interface{}) {
	d.t.Helper()
	if !d.out.Scan() {
		d.t.Fatalf("driver ended: %v", d.out.Err())
	}
	if err := json.Unmarshal(d.out.Bytes(), v); err != nil {
		d.t.Fatalf("driver said %q: %v", d.out.Text(), err)
	}
}

func (d *driver) run(format string, args ...interface{}) batch {
	d.t.Helper()
	if _, err := fmt.Fprintf(d.in, format+"\n", args...); err != nil {
		d.t.Fatal(err)
	}
	var b batch
	d.read(&b)
	return b
}

// close closes the clients and returns what goleak found in the driver.
func (d *driver) close() string {
	d.t.Helper()
	fmt.Fprintln(d.in, "close")
	var r struct {
		Leaks string `json:"leaks"`
	}
	d.read(&r)
	return r.Leaks
}

func startCluster(t *testing.T) (*v2cluster.Cluster, int) {
	t.Helper()
	c := v2cluster.StartTB(t, v2cluster.Config{Size: members})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	leader, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return c, leader
}

func shares(counts []int) []float64 {
	total := 0
	for _, n := range counts {
		total += n
	}
	s := make([]float64, len(counts))
	for i, n := range counts {
		if total > 0 {
			s[i] = float64(n) / float64(total)
		}
	}
	return s
}

func maxShare(counts []int) (int, float64) {
	best := 0
	s := shares(counts)
	for i := range s {
		if s[i] > s[best] {
			best = i
		}
	}
	return best, s[best]
}

// spread reports whether the followers are within 0.8–1.2× of their mean
// and the leader below every follower, with the details.
func spread(counts []int, leader int) (bool, string) {
	s := shares(counts)
	var sum float64
	for i, v := range s {
		if i != leader {
			sum += v
		}
	}
	mean := sum / float64(len(s)-1)
	ok := true
	for i, v := range s {
		if i == leader {
			continue
		}
		if v < 0.8*mean || v > 1.2*mean || s[leader] >= v {
			ok = false
		}
	}
	return ok, fmt.Sprintf("shares %.3f (leader m%d, follower mean %.3f)", s, leader, mean)
}

func TestStockPins(t *testing.T) {
	t.Parallel()
	b := binaries(t)
	c, _ := startCluster(t)
	d := startDriver(t, b.Stock, c)
	r := d.run("reads 300 4 1 5000")
	if r.Errors != 0 {
		t.Fatalf("%d errors, first: %s", r.Errors, r.Error)
	}
	for i, cl := range r.Client {
		m, s := maxShare(cl)
		t.Logf("stock client %d: %.1f%% of its serializable reads on m%d", i, 100*s, m)
		if s < 0.8 {
			t.Errorf("stock client %d put only %.1f%% of its reads on its busiest member; it should pin", i, 100*s)
		}
	}
	m, s := maxShare(r.Served)
	t.Logf("stock, all %d clients: %.1f%% on m%d, shares %.3f", clients, 100*s, m, shares(r.Served))
	if leaks := d.close(); leaks != "" {
		t.Logf("stock client leaves goroutines after Close (not ours to fix): %s", leaks)
	}
}

func TestPatchedSpreadsReads(t *testing.T) {
	t.Parallel()
	b := binaries(t)
	c, leader := startCluster(t)
	d := startDriver(t, b.Patched, c)
	// The engine learns the leader from its first Status round; until then
	// the leader is a member like the others. Warm up until it is avoided.
	for i := 0; ; i++ {
		r := d.run("reads 200 4 1 5000")
		if ok, _ := spread(r.Served, leader); ok {
			break
		}
		if i == 50 {
			t.Fatalf("warm-up: reads never spread with the leader avoided: %v", r.Served)
		}
	}
	r := d.run("reads 1500 4 1 5000")
	if r.Errors != 0 {
		t.Fatalf("%d errors, first: %s", r.Errors, r.Error)
	}
	ok, detail := spread(r.Served, leader)
	t.Logf("patched, %d clients x %d serializable reads: %s", clients, 1500, detail)
	if !ok {
		t.Errorf("want followers within 0.8-1.2x of their mean and the leader below each: %s", detail)
	}
	for i, cl := range r.Client {
		if _, s := maxShare(cl); s >= 0.8 {
			t.Errorf("patched client %d still pins: %.3f", i, shares(cl))
		}
	}
	if leaks := d.close(); leaks != "" {
		t.Errorf("patched client leaks goroutines after Close: %s", leaks)
	}
}

func TestPatchedWritesGoToLeader(t *testing.T) {
	t.Parallel()
	b := binaries(t)
	c, leader := startCluster(t)
	d := startDriver(t, b.Patched, c)
	for i := 0; ; i++ {
		r := d.run("writes 20 2 5000")
		if r.Served[leader] == r.OK && r.OK == clients*20 {
			break
		}
		if i == 200 {
			t.Fatalf("warm-up: writes never all reached the leader m%d: %v", leader, r.Served)
		}
	}
	r := d.run("writes 200 4 5000")
	if r.Errors != 0 {
		t.Fatalf("%d errors, first: %s", r.Errors, r.Error)
	}
	s := shares(r.Served)
	t.Logf("patched, %d writes: shares %.3f, leader m%d", r.OK, s, leader)
	if s[leader] < 0.99 {
		t.Errorf("leader m%d got %.3f of the writes; want all", leader, s[leader])
	}
	if leaks := d.close(); leaks != "" {
		t.Errorf("patched client leaks goroutines after Close: %s", leaks)
	}
}

func TestBlackholedMember(t *testing.T) {
	t.Parallel()
	b := binaries(t)
	t.Run("stock", func(t *testing.T) {
		c, _ := startCluster(t)
		d := startDriver(t, b.Stock, c)
		warm := d.run("reads 50 2 1 5000")
		victim, _ := maxShare(warm.Served)
		c.Member(victim).Proxy().Blackhole(true)
		defer c.Member(victim).Proxy().Blackhole(false)
		r := d.run("reads 20 4 1 500")
		// Only the clients pinned to the victim are hit; each of them fails
		// every read.
		var pinned, failedShare float64
		for i, cl := range warm.Client {
			if m, _ := maxShare(cl); m == victim {
				pinned++
				_ = i
			}
		}
		total := clients * 20
		failedShare = float64(r.Errors) / float64(total)
		t.Logf("stock: m%d black-holed, %d of %d clients pinned there, %d of %d reads failed (%s)",
			victim, int(pinned), clients, r.Errors, total, r.Error)
		if want := pinned / clients * 0.9; failedShare < want {
			t.Errorf("stock failed %.3f of reads; expected at least %.3f (pinned clients fail)", failedShare, want)
		}
		c.Member(victim).Proxy().Blackhole(false)
		d.close()
	})
	t.Run("patched", func(t *testing.T) {
		c, leader := startCluster(t)
		d := startDriver(t, b.Patched, c)
		d.run("reads 300 4 1 5000")
		victim := (leader + 1) % members
		c.Member(victim).Proxy().Blackhole(true)
		defer c.Member(victim).Proxy().Blackhole(false)
		const n = 2000
		r := d.run("reads %d 8 1 1000", n)
		total := clients * n
		t.Logf("patched: follower m%d black-holed, %d of %d reads failed (%.2f%%), shares %.3f",
			victim, r.Errors, total, 100*float64(r.Errors)/float64(total), shares(r.Served))
		if float64(r.Errors) > 0.005*float64(total) {
			t.Errorf("%d of %d reads failed; want at most 0.5%% (first: %s)", r.Errors, total, r.Error)
		}
		c.Member(victim).Proxy().Blackhole(false)
		if leaks := d.close(); leaks != "" {
			t.Errorf("patched client leaks goroutines after Close: %s", leaks)
		}
	})
}
