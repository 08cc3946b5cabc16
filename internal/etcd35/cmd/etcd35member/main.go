// Command etcd35member runs one etcd 3.5 member in-process, with the v2 API
// enabled, for the integration tests of the v2 transport.
//
// etcd 3.6 and later no longer serve /v2/keys, and the 3.5 server does not
// compile next to client/v3 3.6 in the root module; so the 3.5 server lives in
// this nested module and runs as its own process, driven by
// internal/v2cluster.
//
// Protocol on stdout (one line each, logs go to stderr):
//
//	STARTED   listeners are up (a new multi-member cluster still needs peers)
//	READY     the member has joined the cluster and serves clients
//
// Commands on stdin, one a line; each is answered with exactly one line,
// "OK", "ERR <message>" or a JSON object:
//
//	cut <hex id>    drop raft messages to and from that peer (Server.CutPeer)
//	mend <hex id>   undo cut (Server.MendPeer)
//	status          {"id":"..","leader":"..","applied":N,"raftIndex":N,"term":N,"ready":bool}
//	quit            close gracefully and exit
//
// End of stdin closes the member as quit does, so a member never outlives
// the test process that started it, even one that died without cleaning up.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/embed"
)

// options are the command-line flags; names follow etcd's own flags so that
// the command lines in test logs read like etcd's.
type options struct {
	name, dataDir                          string
	listenClient, advertiseClient          string
	listenPeer, advertisePeer              string
	initialCluster, clusterState, token    string
	certFile, keyFile, trustedCAFile       string
	logLevel                               string
	preVote, noFsync                       bool
	heartbeatMs, electionMs, snapshotCount uint64
}

func main() {
	var o options
	flag.StringVar(&o.name, "name", "default", "member name")
	flag.StringVar(&o.dataDir, "data-dir", "", "data directory (required)")
	flag.StringVar(&o.listenClient, "listen-client-urls", "http://127.0.0.1:2379", "comma-separated client URLs to listen on")
	flag.StringVar(&o.advertiseClient, "advertise-client-urls", "", "comma-separated client URLs to advertise (default: listen-client-urls)")
	flag.StringVar(&o.listenPeer, "listen-peer-urls", "http://127.0.0.1:2380", "comma-separated peer URLs to listen on")
	flag.StringVar(&o.advertisePeer, "initial-advertise-peer-urls", "", "comma-separated peer URLs to advertise (default: listen-peer-urls)")
	flag.StringVar(&o.initialCluster, "initial-cluster", "", "name=peerURL,... of every member (default: this member alone)")
	flag.StringVar(&o.clusterState, "initial-cluster-state", "new", "new or existing")
	flag.StringVar(&o.token, "initial-cluster-token", "etcd35member", "initial cluster token")
	flag.StringVar(&o.certFile, "cert-file", "", "TLS certificate for the client URLs")
	flag.StringVar(&o.keyFile, "key-file", "", "TLS key for the client URLs")
	flag.StringVar(&o.trustedCAFile, "trusted-ca-file", "", "CA bundle for client certificates")
	flag.StringVar(&o.logLevel, "log-level", "error", "etcd log level (debug, info, warn, error)")
	flag.BoolVar(&o.preVote, "pre-vote", true, "enable raft pre-vote, so that a member cut off from its peers does not depose the leader when it comes back")
	flag.BoolVar(&o.noFsync, "unsafe-no-fsync", true, "skip fsync (test data only)")
	flag.Uint64Var(&o.heartbeatMs, "heartbeat-interval", 100, "raft heartbeat interval in ms")
	flag.Uint64Var(&o.electionMs, "election-timeout", 1000, "raft election timeout in ms")
	flag.Uint64Var(&o.snapshotCount, "snapshot-count", 0, "raft entries between snapshots (0: etcd's default)")
	flag.Parse()

	if err := run(o, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "etcd35member:", err)
		os.Exit(1)
	}
}

// config turns the flags into an embed.Config.
func config(o options) (*embed.Config, error) {
	if o.dataDir == "" {
		return nil, fmt.Errorf("-data-dir is required")
	}
	switch o.logLevel {
	case "debug", "info", "warn", "error", "panic", "fatal":
	default:
		// etcd panics on an unknown level; say it plainly instead.
		return nil, fmt.Errorf("unknown -log-level %q", o.logLevel)
	}
	cfg := embed.NewConfig()
	cfg.Name = o.name
	cfg.Dir = o.dataDir
	var err error
	if cfg.ListenClientUrls, err = parseURLs(o.listenClient); err != nil {
		return nil, err
	}
	cfg.AdvertiseClientUrls = cfg.ListenClientUrls
	if o.advertiseClient != "" {
		if cfg.AdvertiseClientUrls, err = parseURLs(o.advertiseClient); err != nil {
			return nil, err
		}
	}
	if cfg.ListenPeerUrls, err = parseURLs(o.listenPeer); err != nil {
		return nil, err
	}
	cfg.AdvertisePeerUrls = cfg.ListenPeerUrls
	if o.advertisePeer != "" {
		if cfg.AdvertisePeerUrls, err = parseURLs(o.advertisePeer); err != nil {
			return nil, err
		}
	}
	cfg.InitialCluster = o.initialCluster
	if cfg.InitialCluster == "" {
		cfg.InitialCluster = cfg.InitialClusterFromName(o.name)
	}
	cfg.ClusterState = o.clusterState
	cfg.InitialClusterToken = o.token
	cfg.ClientTLSInfo.CertFile = o.certFile
	cfg.ClientTLSInfo.KeyFile = o.keyFile
	cfg.ClientTLSInfo.TrustedCAFile = o.trustedCAFile

	cfg.EnableV2 = true // the reason this command exists
	cfg.PreVote = o.preVote
	cfg.UnsafeNoFsync = o.noFsync
	cfg.TickMs = uint(o.heartbeatMs)
	cfg.ElectionMs = uint(o.electionMs)
	if o.snapshotCount > 0 {
		cfg.SnapshotCount = o.snapshotCount
	}
	cfg.Logger = "zap"
	cfg.LogLevel = o.logLevel
	// stdout carries the protocol; every log line must go elsewhere.
	cfg.LogOutputs = []string{"stderr"}
	return cfg, nil
}

func parseURLs(s string) ([]url.URL, error) {
	us, err := types.NewURLs(strings.Split(s, ","))
	if err != nil {
		return nil, err
	}
	return []url.URL(us), nil
}

// status is the answer to the "status" command.
type status struct {
	ID        string `json:"id"`
	Leader    string `json:"leader"`
	Applied   uint64 `json:"applied"`
	RaftIndex uint64 `json:"raftIndex"`
	Term      uint64 `json:"term"`
	Ready     bool   `json:"ready"`
}

func run(o options, in io.Reader, out io.Writer) error {
	cfg, err := config(o)
	if err != nil {
		return err
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return err
	}
	// Close exactly once, whichever of quit, EOF, a signal or a server
	// error comes first.
	var closeOnce sync.Once
	closeEtcd := func() {
		closeOnce.Do(func() {
			// etcd's Close can wait on a leader transfer or a stuck peer;
			// a test must never hang on a member, so a watchdog ends it.
			time.AfterFunc(closeTimeout, func() {
				fmt.Fprintln(os.Stderr, "etcd35member: close timed out")
				os.Exit(2)
			})
			e.Close()
		})
	}
	defer closeEtcd()

	var outMu sync.Mutex
	say := func(s string) {
		outMu.Lock()
		defer outMu.Unlock()
		fmt.Fprintln(out, s)
	}
	say("STARTED")

	quit := make(chan struct{})
	go func() {
		defer close(quit)
		serveCommands(e, in, say)
	}()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)

	ready := e.Server.ReadyNotify()
	for {
		select {
		case <-ready:
			ready = nil
			say("READY")
		case <-quit:
			return nil
		case <-sigs:
			return nil
		case err := <-e.Err():
			return fmt.Errorf("server: %w", err)
		case <-e.Server.StopNotify():
			// The server stops on its own when, for example, it was removed
			// from the cluster; there is nothing left to serve.
			return fmt.Errorf("server stopped")
		}
	}
}

// serveCommands answers stdin commands until quit or end of input.
func serveCommands(e *embed.Etcd, in io.Reader, say func(string)) {
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		switch cmd := fields[0]; cmd {
		case "quit":
			say("OK")
			return
		case "cut", "mend":
			if len(fields) != 2 {
				say("ERR usage: " + cmd + " <hex member id>")
				continue
			}
			id, err := types.IDFromString(fields[1])
			if err != nil {
				say("ERR " + err.Error())
				continue
			}
			if cmd == "cut" {
				e.Server.CutPeer(id)
			} else {
				e.Server.MendPeer(id)
			}
			say("OK")
		case "status":
			s := status{
				ID:        e.Server.ID().String(),
				Leader:    e.Server.Leader().String(),
				Applied:   e.Server.AppliedIndex(),
				RaftIndex: e.Server.CommittedIndex(),
				Term:      e.Server.Term(),
			}
			select {
			case <-e.Server.ReadyNotify():
				s.Ready = true
			default:
			}
			b, err := json.Marshal(s)
			if err != nil {
				say("ERR " + err.Error())
				continue
			}
			say(string(b))
		default:
			say("ERR unknown command " + cmd)
		}
	}
}

// closeTimeout bounds a graceful close.
const closeTimeout = 10 * time.Second
