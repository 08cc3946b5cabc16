// Package v2cluster runs a real etcd cluster that serves the v2 API, for
// integration tests of the v2 transport.
//
// etcd 3.6 and later answer /v2/keys with 404, and the 3.5 server, which
// still serves it, does not compile in the root module next to client/v3
// 3.6. So each member is a separate process: the etcd35member command of the
// nested module internal/etcd35, which embeds one etcd 3.5 member with
// EnableV2. Binary builds that command once and caches it; Start runs N
// members on 127.0.0.1, each behind a faultproxy.Proxy on its client port.
//
// Faults come from two places. Network faults between a client and a member
// (latency, black hole, reset, pause, bandwidth) are set on Member.Proxy.
// Raft-level faults, which a proxy cannot make because every member dials
// its peers itself, are made by the member process on request: CutPeers and
// MendPeers, and Kill and Restart for crashes. Members are driven over their
// stdin, so those controls work whatever the proxies are doing.
//
// Members never outlive the test process: each runs in its own process group
// with Pdeathsig set (Linux), closes itself on end of stdin, and Close stops
// and reaps them all.
package v2cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/etcdbalance/etcdbalance-go/internal/faultproxy"
)

// MaxSize is the largest cluster Start runs.
const MaxSize = 9

// Config describes a cluster. The zero value is a 3-member plain-HTTP
// cluster with etcd's default raft timings.
type Config struct {
	// Size is the number of members, 1 to MaxSize; 0 means 3.
	Size int
	// TLS, when set, makes the members serve their client URLs over TLS;
	// Endpoints then start with https. The certificate must be valid for
	// 127.0.0.1. Peer traffic stays plain.
	TLS *TLSFiles
	// HeartbeatInterval and ElectionTimeout are etcd's raft timings; 0
	// means etcd's defaults, 100 ms and 1 s. Shorter ones speed up tests
	// that kill leaders, at the price of spurious elections under load.
	HeartbeatInterval, ElectionTimeout time.Duration
	// LogLevel is the members' log level; "" means "error", which keeps
	// test output quiet.
	LogLevel string
	// Stderr, when set, receives every member's log output as well. The
	// last 32 KiB of each member's log are kept and shown in errors anyway.
	Stderr io.Writer
}

// TLSFiles are PEM files for serving client URLs over TLS.
type TLSFiles struct {
	CertFile, KeyFile string
	// TrustedCAFile, if set, is the CA bundle offered for client
	// certificates; etcd does not require them unless asked to.
	TrustedCAFile string
}

// Cluster is a running set of etcd 3.5 members. Its methods are safe for
// concurrent use.
type Cluster struct {
	cfg            Config
	bin            string
	dir            string // holds every member's data directory
	scheme         string
	token          string
	initialCluster string
	members        []*Member

	closeOnce sync.Once
	closeErr  error
}

// errNoLeader is returned while no running member reports itself leader.
var errNoLeader = errors.New("no member is leader")

// Start builds the member binary if needed (see Binary) and starts a cluster
// of cfg.Size members. Members start one after another, each listening
// before the next starts, because members started together spend up to a
// second each waiting on peers that are not serving yet. Start returns once
// every member is ready; on error nothing is left running.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.Size == 0 {
		cfg.Size = 3
	}
	if cfg.Size < 1 || cfg.Size > MaxSize {
		return nil, fmt.Errorf("v2cluster: size %d out of range 1..%d", cfg.Size, MaxSize)
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = 100 * time.Millisecond
	}
	if cfg.ElectionTimeout == 0 {
		cfg.ElectionTimeout = time.Second
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = "error"
	}
	if t := cfg.TLS; t != nil {
		if t.CertFile == "" || t.KeyFile == "" {
			return nil, errors.New("v2cluster: TLS needs CertFile and KeyFile")
		}
		// etcd reads them only at the first handshake, so a missing file
		// would show as a cluster that starts but cannot be reached.
		for _, f := range []string{t.CertFile, t.KeyFile, t.TrustedCAFile} {
			if _, err := os.Stat(f); f != "" && err != nil {
				return nil, fmt.Errorf("v2cluster: TLS: %w", err)
			}
		}
	}
	bin, err := Binary(ctx)
	if err != nil {
		return nil, err
	}
	// Free ports are found by binding port 0 and closing the listener, so
	// another process can take one before the member binds it. That shows
	// as "address already in use"; new ports then almost always succeed.
	for attempt := 1; ; attempt++ {
		c, err := start(ctx, cfg, bin)
		if err == nil {
			return c, nil
		}
		if attempt == 3 || ctx.Err() != nil || !strings.Contains(err.Error(), "address already in use") {
			return nil, err
		}
	}
}

// StartTB starts a cluster for a test or benchmark, closes it in
// tb.Cleanup and fails tb if it cannot start. The context allows for a
// cold build of the member binary.
func StartTB(tb testing.TB, cfg Config) *Cluster {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := Start(ctx, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := c.Close(); err != nil {
			tb.Error(err)
		}
	})
	return c
}

// dirPrefix names the temporary directories of clusters, and ownerFile
// inside one holds the pid of the process that made it.
const (
	dirPrefix = "v2cluster-"
	ownerFile = "owner.pid"
)

func start(ctx context.Context, cfg Config, bin string) (_ *Cluster, err error) {
	removeOrphanDirs()
	dir, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("v2cluster: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("v2cluster: %w", err)
	}
	c := &Cluster{
		cfg:    cfg,
		bin:    bin,
		dir:    dir,
		scheme: "http",
		// A token of its own keeps members of two clusters apart even if
		// one reuses the other's ports after it ended.
		token: filepath.Base(dir),
	}
	if cfg.TLS != nil {
		c.scheme = "https"
	}
	defer func() {
		if err != nil {
			_ = c.Close()
		}
	}()

	ports, err := freePorts(2 * cfg.Size)
	if err != nil {
		return nil, err
	}
	peers := make([]string, cfg.Size)
	for i := range cfg.Size {
		m := &Member{
			c:          c,
			index:      i,
			name:       "m" + strconv.Itoa(i),
			dataDir:    filepath.Join(dir, "m"+strconv.Itoa(i)),
			clientAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2*i])),
			peerURL:    "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2*i+1])),
		}
		if m.proxy, err = faultproxy.New(m.clientAddr); err != nil {
			return nil, fmt.Errorf("v2cluster: proxy for %s: %w", m.name, err)
		}
		c.members = append(c.members, m)
		peers[i] = m.name + "=" + m.peerURL
	}
	c.initialCluster = strings.Join(peers, ",")

	procs := make([]*process, cfg.Size)
	for i, m := range c.members {
		if procs[i], err = m.spawn("new"); err != nil {
			return nil, err
		}
		if err := procs[i].waitFor(ctx, procs[i].started, "started"); err != nil {
			return nil, err
		}
	}
	for i, p := range procs {
		if err := p.waitFor(ctx, p.ready, "ready"); err != nil {
			return nil, err
		}
		s, err := c.members[i].Status(ctx)
		if err != nil {
			return nil, err
		}
		c.members[i].id = s.ID
	}
	return c, nil
}

// removeOrphanDirs removes the directories of clusters whose test process
// died without closing them (killed, or a panic that skipped cleanup): their
// members died with it, but their data stayed. A directory without an owner
// file may be being set up right now and is left alone.
func removeOrphanDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, ownerFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err == nil && pid != os.Getpid() && processGone(pid) {
			_ = os.RemoveAll(d)
		}
	}
}

// freePorts returns n distinct free TCP ports on 127.0.0.1. All listeners
// are open at once, so the ports differ from each other.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("v2cluster: free port: %w", err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Members returns the members in start order.
func (c *Cluster) Members() []*Member { return append([]*Member(nil), c.members...) }

// Member returns member i.
func (c *Cluster) Member(i int) *Member { return c.members[i] }

// Endpoints returns every member's proxy URL, the endpoints to give a v2
// client under test.
func (c *Cluster) Endpoints() []string {
	eps := make([]string, len(c.members))
	for i, m := range c.members {
		eps[i] = m.URL()
	}
	return eps
}

// Leader returns the index of the current leader, waiting until a running
// member reports one or ctx ends. When two members claim leadership (an old
// leader cut off from the rest has not yet stepped down) the one with the
// higher term wins.
func (c *Cluster) Leader(ctx context.Context) (int, error) {
	for {
		i, err := c.leaderOnce(ctx)
		if err == nil {
			return i, nil
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("v2cluster: leader: %w (%v)", context.Cause(ctx), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *Cluster) leaderOnce(ctx context.Context) (int, error) {
	best, bestTerm := -1, uint64(0)
	for i, m := range c.members {
		if !m.Running() {
			continue
		}
		s, err := m.Status(ctx)
		if err != nil {
			continue
		}
		if s.IsLeader() && (best < 0 || s.Term > bestTerm) {
			best, bestTerm = i, s.Term
		}
	}
	if best < 0 {
		return -1, errNoLeader
	}
	return best, nil
}

// WaitSynced waits until every running member has applied everything the
// leader had committed when WaitSynced was called, so that a serializable
// (local) read on any member sees all earlier writes.
func (c *Cluster) WaitSynced(ctx context.Context) error {
	li, err := c.Leader(ctx)
	if err != nil {
		return err
	}
	ls, err := c.members[li].Status(ctx)
	if err != nil {
		return err
	}
	for _, m := range c.members {
		for m.Running() {
			s, err := m.Status(ctx)
			if err != nil {
				return err
			}
			if s.AppliedIndex >= ls.RaftIndex {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("v2cluster: %s applied %d of %d: %w", m.name, s.AppliedIndex, ls.RaftIndex, context.Cause(ctx))
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

// Close stops every member, followers first and in parallel, then the
// leader (stopping the leader first would force an election that slows the
// rest down), kills whatever does not stop in time, closes the proxies and
// removes the data directories. It is safe to call more than once.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() { c.closeErr = c.close() })
	return c.closeErr
}

func (c *Cluster) close() error {
	var (
		mu   sync.Mutex
		errs []error
	)
	addErr := func(err error) {
		if err != nil {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	leader, _ := c.leaderOnce(ctx)
	cancel()
	var wg sync.WaitGroup
	for i, m := range c.members {
		if i != leader {
			wg.Go(func() { addErr(m.Stop()) })
		}
	}
	wg.Wait()
	if leader >= 0 {
		addErr(c.members[leader].Stop())
	}
	for _, m := range c.members {
		addErr(m.Kill()) // no-op for a member that stopped
		if m.proxy != nil {
			addErr(m.proxy.Close())
		}
	}
	if err := os.RemoveAll(c.dir); err != nil {
		addErr(fmt.Errorf("v2cluster: %w", err))
	}
	return errors.Join(errs...)
}
