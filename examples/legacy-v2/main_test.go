package main

// The test runs a real 3-member etcd 3.5 cluster serving the v2 API. It
// builds the member command, ../../internal/etcd35's etcd35member (an etcd
// 3.5 member with EnableV2, driven over stdin and stdout), and starts it
// with the few lines of launching it needs. Set ETCD35MEMBER_BIN to a
// prebuilt binary to skip the build. (The tests of recipe_test.go use the
// root module's internal/v2cluster, for its fault proxies and TLS: this
// module's import path lies under the root's, so Go lets it import the
// root's internal packages.)

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

var memberBin string

func TestMain(m *testing.M) {
	code, err := testMain(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(code)
}

func testMain(m *testing.M) (int, error) {
	if p := os.Getenv("ETCD35MEMBER_BIN"); p != "" {
		memberBin = p
		return runLeakChecked(m)
	}
	dir, err := os.MkdirTemp("", "legacy-v2-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	memberBin = filepath.Join(dir, "etcd35member")
	mod, err := filepath.Abs(filepath.Join("..", "..", "internal", "etcd35"))
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-C", mod, "-o", memberBin, "./cmd/etcd35member")
	// The nested module builds on its own (no go.work), may fetch what its
	// go.sum names, and skips VCS stamping.
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod -buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("building the etcd 3.5 member from %s: %v\n%s", mod, err, out)
	}
	return runLeakChecked(m)
}

// runLeakChecked runs the tests, then fails if any goroutine outlived them.
func runLeakChecked(m *testing.M) (int, error) {
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			return 1, err
		}
	}
	return code, nil
}

// member is one etcd35member process.
type member struct {
	clientURL string
	cmd       *exec.Cmd
	stdin     io.WriteCloser
	started   chan struct{}
	ready     chan struct{}
	exited    chan struct{}
}

// startCluster starts n members on 127.0.0.1, one after another (members
// started together wait on peers that are not serving yet), and stops them
// at the end of the test.
func startCluster(t *testing.T, n int) []string {
	t.Helper()
	dir := t.TempDir()
	ports := freePorts(t, 2*n)
	var peers []string
	for i := 0; i < n; i++ {
		peers = append(peers, fmt.Sprintf("m%d=http://127.0.0.1:%d", i, ports[2*i+1]))
	}
	var members []*member
	t.Cleanup(func() {
		for _, m := range members {
			m.stdin.Close() // end of input: the member closes itself
		}
		for _, m := range members {
			select {
			case <-m.exited:
			case <-time.After(15 * time.Second):
				m.cmd.Process.Kill()
				<-m.exited
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var eps []string
	for i := 0; i < n; i++ {
		m := &member{
			clientURL: fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]),
			started:   make(chan struct{}),
			ready:     make(chan struct{}),
			exited:    make(chan struct{}),
		}
		peer := strings.SplitN(peers[i], "=", 2)[1]
		m.cmd = exec.Command(memberBin,
			"-name", fmt.Sprintf("m%d", i),
			"-data-dir", filepath.Join(dir, fmt.Sprintf("m%d", i)),
			"-listen-client-urls", m.clientURL, "-advertise-client-urls", m.clientURL,
			"-listen-peer-urls", peer, "-initial-advertise-peer-urls", peer,
			"-initial-cluster", strings.Join(peers, ","),
			"-initial-cluster-state", "new",
			"-initial-cluster-token", filepath.Base(dir),
		)
		var err error
		if m.stdin, err = m.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		stdout, err := m.cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := m.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		members = append(members, m)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				switch sc.Text() {
				case "STARTED":
					close(m.started)
				case "READY":
					close(m.ready)
				}
			}
			m.cmd.Wait()
			close(m.exited)
		}()
		waitFor(t, ctx, m, m.started, "started")
		eps = append(eps, m.clientURL)
	}
	for _, m := range members {
		waitFor(t, ctx, m, m.ready, "ready")
	}
	return eps
}

func waitFor(t *testing.T, ctx context.Context, m *member, ch chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-m.exited:
		t.Fatalf("member %s exited before it was %s", m.clientURL, what)
	case <-ctx.Done():
		t.Fatalf("member %s not %s: %v", m.clientURL, what, ctx.Err())
	}
}

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// The client built as apiserver 1.7 builds it, with the patch, spreads its
// reads over every member; the same client without the patch pins one.
func TestReadsSpreadAcrossMembers(t *testing.T) {
	eps := startCluster(t, 3)
	const n = 1500
	served, err := run(eps, "/legacy-v2/probe", n, 8, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("patched client, %d reads: store Gets per member %v", n, served)
	var total int64
	for _, s := range served {
		total += s
	}
	if total < n {
		t.Fatalf("the members counted %d Gets for %d reads", total, n)
	}
	for i, s := range served {
		// Every member takes a real share: the stock client gives two of
		// the three nothing. (The engine's default policy does not split
		// reads evenly to within a few percent on a busy 2-core machine;
		// the root module's tests measure that.)
		if s < total/10 {
			t.Errorf("member %s served %d of %d store Gets", eps[i], s, total)
		}
	}

	served, err = run(eps, "/legacy-v2/probe", n, 8, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stock client, %d reads: store Gets per member %v", n, served)
	total = 0
	var max int64
	for _, s := range served {
		total += s
		if s > max {
			max = s
		}
	}
	if max != total {
		t.Errorf("the stock client spread its reads %v: it was expected to pin one member", served)
	}
}

// Bad endpoints are reported by the patched factory, naming them.
func TestBadEndpoint(t *testing.T) {
	_, _, _, err := newETCD2Client([]string{"http://127.0.0.1:2379", "127.0.0.1:2380"}, "", "", "")
	if err == nil || !strings.Contains(err.Error(), `"127.0.0.1:2380"`) {
		t.Fatalf("got %v", err)
	}
}
