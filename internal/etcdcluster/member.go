package etcdcluster

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver"
	"go.uber.org/zap"

	"github.com/etcdbalance/etcdbalance-go/internal/faultproxy"
)

// Member is one etcd member of a Cluster. Its ports, name, data directory
// and proxy stay the same across Stop and Restart.
type Member struct {
	c                    *Cluster
	name, dir            string
	clientPort, peerPort int
	proxy                *faultproxy.Proxy
	// peerRelay carries the member's incoming raft/peer traffic (it is the
	// advertised peer URL). It injects no faults: it exists so that Stop
	// and Close can cut the peer HTTP connections that etcd leaves behind
	// (see Stop).
	peerRelay *faultproxy.Proxy

	// Set before each launch, under the lifecycle or cluster lock.
	initialCluster, clusterState string

	id      atomic.Uint64
	learner atomic.Bool // as last set through the cluster's member API
	cut     atomic.Bool // between CutPeers and MendPeers

	opMu sync.Mutex // serialises Stop and Restart
	mu   sync.Mutex // guards etcd
	etcd *embed.Etcd
}

// Name returns the member's etcd name ("m0", "m1", ...).
func (m *Member) Name() string { return m.name }

// ID returns the member's raft ID (known once it has been added or started).
func (m *Member) ID() uint64 { return m.id.Load() }

func (m *Member) setID(id uint64) { m.id.Store(id) }

// ClientAddr returns the address of the member's proxy, "127.0.0.1:port":
// what clients dial. It is also the client URL the member advertises.
func (m *Member) ClientAddr() string { return m.proxy.Addr() }

// DirectAddr returns the member's real client listener, bypassing the proxy.
func (m *Member) DirectAddr() string { return "127.0.0.1:" + strconv.Itoa(m.clientPort) }

// PeerAddr returns the member's advertised peer address (a plain relay in
// front of its peer listener).
func (m *Member) PeerAddr() string { return m.peerRelay.Addr() }

// DataDir returns the member's data directory.
func (m *Member) DataDir() string { return m.dir }

// Proxy returns the fault proxy in front of the member's client port.
func (m *Member) Proxy() *faultproxy.Proxy { return m.proxy }

// Server returns the embedded server, or nil while the member is stopped.
func (m *Member) Server() *embed.Etcd {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.etcd
}

func (m *Member) etcdServer() *etcdserver.EtcdServer {
	if e := m.Server(); e != nil {
		return e.Server
	}
	return nil
}

func (m *Member) scheme() string {
	if m.c.cfg.TLS != nil {
		return "https"
	}
	return "http"
}

func (m *Member) peerURL() *url.URL { return &url.URL{Scheme: "http", Host: m.PeerAddr()} }

func (m *Member) listenPeerURL() *url.URL {
	return &url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(m.peerPort)}
}

// AppliedIndex returns the raft index the member has applied, 0 when stopped.
func (m *Member) AppliedIndex() uint64 {
	if s := m.etcdServer(); s != nil {
		return s.AppliedIndex()
	}
	return 0
}

// IsLeader reports whether the member is running and considers itself the
// leader. Just after a partition an old leader may still think so: use
// Cluster.WaitLeader for the leader a majority follows.
func (m *Member) IsLeader() bool {
	s := m.etcdServer()
	return s != nil && s.Lead() == m.ID()
}

// IsLearner reports whether the member is a learner: the running server's
// view, or the last known one while it is stopped.
func (m *Member) IsLearner() bool {
	if s := m.etcdServer(); s != nil {
		return s.IsLearner()
	}
	return m.learner.Load()
}

// CutPeers partitions the member at the raft level: it drops its messages
// to every other member and they drop theirs to it, as etcd's own
// InjectPartition does. Client traffic is untouched. The partition lasts
// until MendPeers, across restarts and AddMember: a starting member needs
// its peers to become ready, so it is connected while it starts (and may
// catch up then), and the partition is re-applied as soon as it serves.
func (m *Member) CutPeers() {
	m.cut.Store(true)
	m.partition(true)
}

// MendPeers undoes CutPeers.
func (m *Member) MendPeers() {
	m.cut.Store(false)
	m.partition(false)
}

func (m *Member) partition(cut bool) {
	apply := func(s *etcdserver.EtcdServer, peer uint64) {
		if cut {
			s.CutPeer(types.ID(peer))
		} else {
			s.MendPeer(types.ID(peer))
		}
	}
	self := m.etcdServer()
	for _, o := range m.c.Members() {
		// Mending must not reconnect another member that is still cut.
		if o == m || (!cut && o.cut.Load()) {
			continue
		}
		if self != nil {
			apply(self, o.ID())
		}
		if s := o.etcdServer(); s != nil {
			apply(s, m.ID())
		}
	}
}

// Stop stops the member's server and keeps its data directory. Its proxy
// stays up: open connections are reset and new ones refused, as with a
// member that is down. A leader first hands leadership over, as etcd does
// on shutdown (unless it is cut off by CutPeers). Stopping a stopped member
// does nothing.
func (m *Member) Stop() error { return m.stop(!m.cut.Load()) }

// stop stops the server; graceful lets a leader transfer leadership first.
func (m *Member) stop(graceful bool) error {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	m.mu.Lock()
	e := m.etcd
	m.etcd = nil
	m.mu.Unlock()
	// Resetting client connections first also spares Close its wait for
	// in-flight RPCs and watch streams to drain.
	m.proxy.RefuseNew(true)
	m.proxy.ResetAll()
	if e != nil {
		if graceful {
			// What Close would do first, done here so that the member can
			// be cut off from its peers afterwards. Failure (no live peer)
			// just means no transfer.
			_ = e.Server.TryTransferLeadershipOnShutdown()
		} else {
			// Stopping raft first drops the transport's peers, so Close
			// will not attempt a transfer that could wait 7 s for peers
			// that are gone or cut.
			e.Server.HardStop()
		}
		// etcd's peer HTTP connections (version checks, forwarded lease and
		// promote calls) can stay stuck for up to its 5 s connection read
		// timeout after a request; Close waits 1 s for them and then leaves
		// them, with goroutines on both ends. Resetting them ends all that.
		m.peerRelay.RefuseNew(true)
		m.peerRelay.ResetAll()
		e.Close()
		m.peerRelay.ResetAll()
		// Peers dialling a stopped member get a reset instead of a refusal;
		// rafthttp treats both alike. Restart needs the relay open.
		m.peerRelay.RefuseNew(false)
	}
	return nil
}

// Restart starts a stopped member again with the same name, data directory
// and ports (so the proxy's target stays valid) and returns once it serves
// client requests. If one of its ports was taken by another process while it
// was stopped, the error wraps ErrPortTaken.
func (m *Member) Restart(ctx context.Context) error {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	if m.c.isClosed() {
		return errClosed
	}
	if m.Server() != nil {
		return fmt.Errorf("etcdcluster: member %s is running", m.name)
	}
	if m.cut.Load() {
		// The others still drop its messages; it could never become ready.
		m.partition(false)
	}
	l, err := m.launch()
	if err != nil {
		m.c.reapplyCuts()
		return err
	}
	if err := l.await(ctx); err != nil {
		m.c.reapplyCuts()
		return err
	}
	m.setRunning(l.etcd)
	m.c.reapplyCuts()
	return nil
}

func (m *Member) setRunning(e *embed.Etcd) {
	m.mu.Lock()
	m.etcd = e
	m.mu.Unlock()
	m.setID(uint64(e.Server.MemberID()))
	m.proxy.RefuseNew(false)
}

// ErrPortTaken reports that a port picked for a member was bound by someone
// else before the member could bind it. Start retries with fresh ports;
// Restart cannot, because the member's ports are fixed.
var ErrPortTaken = errors.New("etcdcluster: port taken")

// launch is a started server that may not be ready yet.
type launch struct {
	etcd *embed.Etcd
	name string
}

func (m *Member) launch() (*launch, error) {
	e, err := embed.StartEtcd(m.embedConfig())
	if err != nil {
		if isAddrInUse(err) {
			return nil, fmt.Errorf("%w: member %s (client port %d, peer port %d): %w",
				ErrPortTaken, m.name, m.clientPort, m.peerPort, err)
		}
		return nil, fmt.Errorf("etcdcluster: start member %s: %w", m.name, err)
	}
	return &launch{etcd: e, name: m.name}, nil
}

// await waits until the server serves client requests; on failure it
// closes the server.
func (l *launch) await(ctx context.Context) error {
	e := l.etcd
	var err error
	select {
	case <-e.Server.ReadyNotify():
		return nil
	case err = <-e.Err():
	case <-e.Server.StopNotify():
		err = errors.New("server stopped")
	case <-ctx.Done():
		err = ctx.Err()
	}
	e.Close()
	return fmt.Errorf("etcdcluster: member %s not ready: %w", l.name, err)
}

func (m *Member) embedConfig() *embed.Config {
	cfg := m.c.cfg
	ec := embed.NewConfig()
	ec.Name = m.name
	ec.Dir = m.dir
	ec.ListenClientUrls = []url.URL{clientURL(m.scheme(), m.DirectAddr())}
	// Advertise the proxy, so that clients that sync their endpoint list
	// from the member list stay behind the proxies.
	ec.AdvertiseClientUrls = []url.URL{clientURL(m.scheme(), m.ClientAddr())}
	ec.ListenPeerUrls = []url.URL{*m.listenPeerURL()}
	ec.AdvertisePeerUrls = []url.URL{*m.peerURL()}
	ec.InitialCluster = m.initialCluster
	ec.InitialClusterToken = m.c.token
	ec.ClusterState = m.clusterState
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(cfg.Logger.With(zap.String("member", m.name)))
	// Test data need not survive a machine crash; fsync dominates latency.
	ec.UnsafeNoFsync = true
	// Compaction must not change revisions under a test; "0" disables it
	// (an empty mode with "0" is rejected by etcd).
	ec.AutoCompactionMode = embed.CompactorModePeriodic
	ec.AutoCompactionRetention = "0"
	// The HTTP/JSON gateway dials the member's own port: not needed here.
	ec.EnableGRPCGateway = false
	if cfg.SnapshotCount > 0 {
		ec.SnapshotCount = cfg.SnapshotCount
		ec.SnapshotCatchUpEntries = min(ec.SnapshotCatchUpEntries, cfg.SnapshotCount)
	}
	if cfg.HeartbeatInterval > 0 {
		ec.TickMs = uint(cfg.HeartbeatInterval / time.Millisecond)
	}
	// etcd's strict check wants members connected for 5 s before a
	// membership change; with a fresh cluster that is a 5 s stall.
	ec.StrictReconfigCheck = cfg.StrictReconfigCheck
	if cfg.ElectionTimeout > 0 {
		ec.ElectionMs = uint(cfg.ElectionTimeout / time.Millisecond)
	}
	if t := cfg.TLS; t != nil {
		ec.ClientTLSInfo = transport.TLSInfo{
			CertFile:       t.CertFile,
			KeyFile:        t.KeyFile,
			TrustedCAFile:  t.TrustedCAFile,
			ClientCertAuth: t.ClientCertAuth,
		}
	}
	if cfg.Tweak != nil {
		cfg.Tweak(ec)
	}
	return ec
}

// isRejectedBeforeProposal reports membership errors that etcd returns
// after its checks and before proposing the change: retrying them is safe.
func isRejectedBeforeProposal(err error) bool {
	return errors.Is(err, rpctypes.ErrMemberNotEnoughStarted) ||
		errors.Is(err, rpctypes.ErrMemberLearnerNotReady) ||
		errors.Is(err, rpctypes.ErrUnhealthy)
}

func (m *Member) closeProxies() error {
	return errors.Join(m.proxy.Close(), m.peerRelay.Close())
}
