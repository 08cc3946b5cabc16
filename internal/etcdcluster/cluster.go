// Package etcdcluster runs a cluster of real etcd members inside the current
// process, for tests, example programs and benchmarks.
//
// Each member is a go.etcd.io/etcd/server/v3/embed server listening on
// 127.0.0.1, with its own temporary data directory, and its client port sits
// behind a faultproxy.Proxy: clients dial Cluster.Endpoints (the proxies), so
// that a test can slow down, black-hole or reset one member's client traffic.
// Raft-level faults use the server itself (Member.CutPeers).
//
// Nothing here needs a *testing.T. Every resource (goroutines, ports, temp
// directories) is released by Cluster.Close. Several clusters may run in one
// process, one after another or at the same time.
package etcdcluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/etcdbalance/etcdbalance-go/internal/faultproxy"
)

const (
	defaultSize = 3
	maxSize     = 9
	// startAttempts bounds retries of Start when a picked port was taken
	// between picking and binding.
	startAttempts = 3
	// pollInterval paces the waits on cluster state.
	pollInterval = 10 * time.Millisecond
)

// Config describes a cluster to start. The zero value is a 3-member
// cluster with etcd's default timing and quota.
type Config struct {
	// Size is the number of members, 1 to 9; 0 means 3.
	Size int
	// TLS, if set, serves the members' client ports with TLS. The proxies
	// pass TLS through untouched (and so count no Streams).
	TLS *TLSConfig
	// Logger receives the members' logs; nil discards them (etcd is noisy).
	Logger *zap.Logger
	// SnapshotCount is the number of applied entries between snapshots; 0
	// keeps etcd's default. A small value makes a lagging member catch up
	// from a snapshot rather than from the log.
	SnapshotCount uint64
	// HeartbeatInterval and ElectionTimeout set raft timing; 0 keeps etcd's
	// defaults (100 ms and 1 s). Very short values cause spurious elections
	// on a busy 2-core machine.
	HeartbeatInterval, ElectionTimeout time.Duration
	// Dir is where the cluster's temporary directory is made; "" means
	// os.TempDir().
	Dir string
	// StrictReconfigCheck turns on etcd's check that refuses membership
	// changes unless enough members have been connected for 5 s. Off by
	// default, so that a test can change membership right after Start.
	StrictReconfigCheck bool
	// Tweak, if set, is applied to every member's embed.Config just before
	// the member starts, for settings this Config does not cover.
	Tweak func(*embed.Config)
}

// Cluster is a running set of in-process etcd members.
type Cluster struct {
	cfg   Config
	dir   string
	token string

	mu      sync.Mutex // guards members, nextIdx, closed, user, password
	members []*Member
	nextIdx int
	closed  bool
	// user and password are the credentials NewClient and the control
	// clients use once EnableAuth has run; "" before.
	user, password string

	opMu sync.Mutex // serialises membership changes
}

// Start starts cfg.Size members and returns once all of them serve client
// requests. Members are launched one after another, each listening before
// the next starts (launched together, each would wait about a second for
// peers that are not listening yet). If a picked port turns out to be taken,
// Start tries again with fresh ports.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.Size == 0 {
		cfg.Size = defaultSize
	}
	if cfg.Size < 1 || cfg.Size > maxSize {
		return nil, fmt.Errorf("etcdcluster: size %d out of range 1..%d", cfg.Size, maxSize)
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	var err error
	for range startAttempts {
		var c *Cluster
		c, err = start(ctx, cfg)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, ErrPortTaken) || ctx.Err() != nil {
			break
		}
	}
	return nil, err
}

func start(ctx context.Context, cfg Config) (*Cluster, error) {
	dir, err := os.MkdirTemp(cfg.Dir, "etcdcluster-")
	if err != nil {
		return nil, fmt.Errorf("etcdcluster: %w", err)
	}
	var tok [8]byte
	_, _ = rand.Read(tok[:])
	c := &Cluster{
		cfg: cfg,
		dir: dir,
		// A unique token keeps clusters in one process from ever joining
		// each other's members.
		token: "etcdcluster-" + hex.EncodeToString(tok[:]),
	}
	fail := func(err error) (*Cluster, error) {
		_ = c.Close()
		return nil, err
	}
	for range cfg.Size {
		m, err := c.newMember()
		if err != nil {
			return fail(err)
		}
		c.members = append(c.members, m)
	}
	initial := initialCluster(c.members, nil)
	launched := make([]*launch, 0, len(c.members))
	for _, m := range c.members {
		m.initialCluster, m.clusterState = initial, embed.ClusterStateFlagNew
		l, err := m.launch()
		if err != nil {
			for _, l := range launched {
				l.etcd.Close()
			}
			return fail(err)
		}
		launched = append(launched, l)
	}
	for i, l := range launched {
		if err := l.await(ctx); err != nil {
			for _, l := range launched[i+1:] {
				l.etcd.Close()
			}
			return fail(err)
		}
		c.members[i].setRunning(l.etcd)
	}
	// Later restarts find their data directory initialised and ignore this.
	for _, m := range c.members {
		m.clusterState = embed.ClusterStateFlagExisting
	}
	return c, nil
}

// newMember reserves ports, a data directory name and a proxy for a member
// that is not started yet.
func (c *Cluster) newMember() (*Member, error) {
	c.mu.Lock()
	name := fmt.Sprintf("m%d", c.nextIdx)
	c.nextIdx++
	c.mu.Unlock()
	ports, err := reservePorts(2)
	if err != nil {
		return nil, err
	}
	m := &Member{
		c:          c,
		name:       name,
		dir:        filepath.Join(c.dir, name),
		clientPort: ports[0],
		peerPort:   ports[1],
	}
	m.proxy, err = faultproxy.New(m.DirectAddr())
	if err != nil {
		releasePorts(ports...)
		return nil, err
	}
	m.peerRelay, err = faultproxy.New(m.listenPeerURL().Host)
	if err != nil {
		_ = m.proxy.Close()
		releasePorts(ports...)
		return nil, err
	}
	// Until the member serves, connections are refused as by a down member.
	m.proxy.RefuseNew(true)
	return m, nil
}

// initialCluster renders "name=peerURL,..." for the members plus extra.
func initialCluster(ms []*Member, extra map[string]string) string {
	var parts []string
	for _, m := range ms {
		parts = append(parts, m.name+"="+m.peerURL().String())
	}
	for name, u := range extra {
		parts = append(parts, name+"="+u)
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// Members returns the members, in the order they were added.
func (c *Cluster) Members() []*Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.members)
}

// Endpoints returns the members' proxy addresses ("127.0.0.1:port"), which
// is what clients should dial.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, m := range c.Members() {
		eps = append(eps, m.ClientAddr())
	}
	return eps
}

// TLS returns the cluster's TLS configuration, nil when it serves plain TCP.
func (c *Cluster) TLS() *TLSConfig { return c.cfg.TLS }

// NewClient returns a clientv3 client for the given endpoints, by default
// Endpoints(), with TLS set up if the cluster uses it and logging off. The
// caller must Close it.
func (c *Cluster) NewClient(endpoints ...string) (*clientv3.Client, error) {
	if len(endpoints) == 0 {
		endpoints = c.Endpoints()
	}
	cfg := clientv3.Config{Endpoints: endpoints, Logger: zap.NewNop()}
	c.mu.Lock()
	cfg.Username, cfg.Password = c.user, c.password
	c.mu.Unlock()
	if c.cfg.TLS != nil {
		tc, err := c.cfg.TLS.ClientTLS()
		if err != nil {
			return nil, err
		}
		cfg.TLS = tc
	}
	return clientv3.New(cfg)
}

// controlClient returns a client on the direct (unproxied) addresses of the
// running voting members other than skip, so that cluster operations are
// neither disturbed by proxy faults nor counted in proxy Stats.
func (c *Cluster) controlClient(skip *Member) (*clientv3.Client, error) {
	var eps []string
	for _, m := range c.Members() {
		if m != skip && m.Server() != nil && !m.IsLearner() {
			eps = append(eps, m.DirectAddr())
		}
	}
	if len(eps) == 0 {
		return nil, errors.New("etcdcluster: no running voting member")
	}
	return c.NewClient(eps...)
}

// RootUser is the user EnableAuth creates.
const RootUser = "root"

// EnableAuth turns on etcd's authentication, as an operator would with
// "etcdctl user add root" and "etcdctl auth enable": it creates the user
// root with password (and the root role), then enables auth. From then on
// NewClient, and the clients the cluster uses for membership changes,
// authenticate as root with that password. With TLS client-certificate
// auth (TLSConfig.ClientCertAuth), a client certificate whose CommonName
// is "root" authenticates as root without a password.
func (c *Cluster) EnableAuth(ctx context.Context, password string) error {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	cli, err := c.controlClient(nil)
	if err != nil {
		return err
	}
	defer func() { _ = cli.Close() }()
	if _, err := cli.UserAdd(ctx, RootUser, password); err != nil {
		return fmt.Errorf("etcdcluster: add user root: %w", err)
	}
	if _, err := cli.UserGrantRole(ctx, RootUser, "root"); err != nil {
		return fmt.Errorf("etcdcluster: grant root role: %w", err)
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		return fmt.Errorf("etcdcluster: enable auth: %w", err)
	}
	c.mu.Lock()
	c.user, c.password = RootUser, password
	c.mu.Unlock()
	// Every member must have applied the change before a client counts on
	// it (a member that has not yet would accept calls without a token).
	return c.waitMembersApplied(ctx)
}

// WaitLeader waits until a leader is known to a majority of the voting
// members and returns its index in Members().
func (c *Cluster) WaitLeader(ctx context.Context) (int, error) {
	for {
		if i, _ := c.leader(); i >= 0 {
			return i, nil
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("etcdcluster: no leader: %w", ctx.Err())
		case <-time.After(pollInterval):
		}
	}
}

// leader returns the member that considers itself leader and is followed by
// a majority of voting members, with its index in Members(), or -1 and nil.
// A deposed leader that has not noticed yet has no majority, so it is never
// returned.
func (c *Cluster) leader() (int, *Member) {
	ms := c.Members()
	voters := 0
	for _, m := range ms {
		if !m.learner.Load() {
			voters++
		}
	}
	for i, m := range ms {
		if !m.IsLeader() {
			continue
		}
		agree := 0
		for _, o := range ms {
			if s := o.etcdServer(); s != nil && !o.learner.Load() && s.Lead() == m.ID() {
				agree++
			}
		}
		if agree > voters/2 {
			return i, m
		}
	}
	return -1, nil
}

// AddMember adds a member through the member API of the running members,
// starts it so that it joins the cluster, and returns it once it serves
// client requests. A learner receives the log but does not vote.
func (c *Cluster) AddMember(ctx context.Context, learner bool) (*Member, error) {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	if c.isClosed() {
		return nil, errClosed
	}
	m, err := c.newMember()
	if err != nil {
		return nil, err
	}
	m.learner.Store(learner)
	discard := func(err error) (*Member, error) {
		_ = m.closeProxies()
		releasePorts(m.clientPort, m.peerPort)
		_ = os.RemoveAll(m.dir)
		return nil, err
	}

	cli, err := c.controlClient(nil)
	if err != nil {
		return discard(err)
	}
	defer func() { _ = cli.Close() }()
	peers := []string{m.peerURL().String()}
	var resp *clientv3.MemberAddResponse
	err = retryRejected(ctx, func() error {
		var err error
		if learner {
			resp, err = cli.MemberAddAsLearner(ctx, peers)
		} else {
			resp, err = cli.MemberAdd(ctx, peers)
		}
		return err
	})
	if err != nil {
		return discard(fmt.Errorf("etcdcluster: add member: %w", err))
	}
	m.setID(resp.Member.ID)
	// The joining member fetches the member list from a peer; one that has
	// not applied the addition yet makes it fail with "member count is
	// unequal".
	if err := c.waitMembersApplied(ctx); err != nil {
		return discard(err)
	}

	// The joining member must be told every current member by name.
	known := c.Members()
	extra := map[string]string{}
	for _, rm := range resp.Members {
		if rm.ID == resp.Member.ID || slices.ContainsFunc(known, func(k *Member) bool { return k.ID() == rm.ID }) {
			continue
		}
		name := rm.Name
		if name == "" {
			name = fmt.Sprintf("unstarted-%x", rm.ID)
		}
		for _, u := range rm.PeerURLs {
			extra[name] = u
		}
	}
	m.initialCluster = initialCluster(append(known, m), extra)
	m.clusterState = embed.ClusterStateFlagExisting

	l, err := m.launch()
	if err == nil {
		err = l.await(ctx)
	}
	if err != nil {
		// Roll the membership back so that the cluster keeps its quorum size.
		rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, _ = cli.MemberRemove(rctx, resp.Member.ID)
		cancel()
		return discard(err)
	}
	m.setRunning(l.etcd)
	c.mu.Lock()
	c.members = append(c.members, m)
	c.mu.Unlock()
	c.reapplyCuts()
	return m, nil
}

// reapplyCuts extends the partitions of cut members to servers started
// since: a restarted server's transport starts connected.
func (c *Cluster) reapplyCuts() {
	for _, m := range c.Members() {
		if m.cut.Load() {
			m.partition(true)
		}
	}
}

// RemoveMember removes m from the cluster through the member API of the
// other members, stops it, closes its proxy and deletes its data.
func (c *Cluster) RemoveMember(ctx context.Context, m *Member) error {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	if c.isClosed() {
		return errClosed
	}
	err := c.memberAPI(ctx, m, "remove member", func(cli *clientv3.Client) error {
		_, err := cli.MemberRemove(ctx, m.ID())
		return err
	})
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.members = slices.DeleteFunc(c.members, func(o *Member) bool { return o == m })
	c.mu.Unlock()
	err = errors.Join(m.Stop(), m.closeProxies())
	releasePorts(m.clientPort, m.peerPort)
	return errors.Join(err, os.RemoveAll(m.dir))
}

// PromoteLearner turns the learner m into a voting member, retrying while
// etcd reports that the learner has not caught up with the leader yet.
func (c *Cluster) PromoteLearner(ctx context.Context, m *Member) error {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	if c.isClosed() {
		return errClosed
	}
	err := c.memberAPI(ctx, m, "promote", func(cli *clientv3.Client) error {
		_, err := cli.MemberPromote(ctx, m.ID())
		return err
	})
	if err != nil {
		return err
	}
	m.learner.Store(false)
	// The leader has committed the promotion; wait until the member itself
	// has applied it, so that IsLearner agrees from now on.
	for m.IsLearner() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("etcdcluster: promote %s: not applied: %w", m.name, ctx.Err())
		case <-time.After(pollInterval):
		}
	}
	return nil
}

// MoveLeader transfers leadership to the voting member to and waits until
// a majority follows it.
func (c *Cluster) MoveLeader(ctx context.Context, to *Member) error {
	if _, err := c.WaitLeader(ctx); err != nil {
		return err
	}
	_, lead := c.leader()
	if lead == nil {
		return errors.New("etcdcluster: leader lost")
	}
	if lead != to {
		s := lead.etcdServer()
		if s == nil {
			return errors.New("etcdcluster: leader stopped")
		}
		if err := s.MoveLeader(ctx, lead.ID(), to.ID()); err != nil {
			return fmt.Errorf("etcdcluster: move leader to %s: %w", to.name, err)
		}
	}
	for {
		if _, l := c.leader(); l == to {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("etcdcluster: move leader to %s: %w", to.name, ctx.Err())
		case <-time.After(pollInterval):
		}
	}
}

// Close stops every member, closes the proxies, releases the ports and
// deletes the data directories. It is safe to call more than once.
//
// Members stop all at once without a leadership transfer: their raft loops
// stop first, and their client and peer connections are reset, so no one
// waits for peers or for requests to drain. (Closing the embedded servers
// directly, all at once, takes about 7 s, because the leader tries to hand
// over to peers that are going away; followers first, then the leader,
// takes about 1 s.)
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	// Wait for a membership change in flight, then stop for good.
	c.opMu.Lock()
	defer c.opMu.Unlock()
	ms := c.Members()
	errs := make([]error, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Go(func() { errs[i] = m.stop(false) })
	}
	wg.Wait()
	for _, m := range ms {
		errs = append(errs, m.closeProxies())
		releasePorts(m.clientPort, m.peerPort)
	}
	errs = append(errs, os.RemoveAll(c.dir))
	return errors.Join(errs...)
}

func (c *Cluster) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

var errClosed = errors.New("etcdcluster: cluster closed")

// retryRejected runs op until it succeeds, fails for good or ctx ends. It
// retries only errors that etcd returns before proposing anything, so a
// retry can never apply a change twice.
// memberAPI runs op on a control client of the members other than m,
// retrying while etcd rejects the change for now.
func (c *Cluster) memberAPI(ctx context.Context, m *Member, what string, op func(*clientv3.Client) error) error {
	cli, err := c.controlClient(m)
	if err != nil {
		return err
	}
	defer func() { _ = cli.Close() }()
	if err := retryRejected(ctx, func() error { return op(cli) }); err != nil {
		return fmt.Errorf("etcdcluster: %s %s: %w", what, m.name, err)
	}
	return nil
}

// waitMembersApplied waits, for at most 10s, until every running member
// that is not cut off has applied as far as the furthest one.
func (c *Cluster) waitMembersApplied(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var live []*Member
	var target uint64
	for _, m := range c.Members() {
		if m.Server() == nil || m.cut.Load() {
			continue
		}
		live = append(live, m)
		target = max(target, m.AppliedIndex())
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		behind := 0
		for _, m := range live {
			if m.Server() != nil && m.AppliedIndex() < target {
				behind++
			}
		}
		if behind == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("etcdcluster: %d members did not apply index %d: %w", behind, target, ctx.Err())
		case <-tick.C:
		}
	}
}

func retryRejected(ctx context.Context, op func() error) error {
	for {
		err := op()
		if !isRejectedBeforeProposal(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		case <-time.After(5 * pollInterval):
		}
	}
}

func clientURL(scheme, host string) url.URL { return url.URL{Scheme: scheme, Host: host} }
