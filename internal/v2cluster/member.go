package v2cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/etcdbalance/etcdbalance-go/internal/faultproxy"
)

// stopTimeout bounds a graceful stop before the member is killed. The
// member's own watchdog exits after 10 s of closing; this is the outer net.
const stopTimeout = 15 * time.Second

// Member is one etcd 3.5 member process, its data directory and the fault
// proxy in front of its client port. The data directory and the ports
// survive Kill, so Restart brings back the same member.
type Member struct {
	c       *Cluster
	index   int
	name    string
	dataDir string
	// clientAddr and peerURL are fixed for the member's life: the cluster
	// knows the member by its peer URL, and the proxy forwards to clientAddr.
	clientAddr string
	peerURL    string
	proxy      *faultproxy.Proxy
	id         uint64

	mu   sync.Mutex // guards proc
	proc *process   // the current or last process; nil before the first start
}

// Index returns the member's position in Cluster.Members.
func (m *Member) Index() int { return m.index }

// Name returns the member's etcd name ("m0", "m1", ...).
func (m *Member) Name() string { return m.name }

// ID returns the member's raft ID.
func (m *Member) ID() uint64 { return m.id }

// DataDir returns the member's data directory.
func (m *Member) DataDir() string { return m.dataDir }

// URL returns the client URL through the fault proxy: what a client under
// test should be given.
func (m *Member) URL() string { return m.c.scheme + "://" + m.proxy.Addr() }

// DirectURL returns the member's own client URL, bypassing the proxy, for
// checks that must not be disturbed by injected faults.
func (m *Member) DirectURL() string { return m.c.scheme + "://" + m.clientAddr }

// Proxy returns the fault proxy in front of the member's client port.
func (m *Member) Proxy() *faultproxy.Proxy { return m.proxy }

// PID returns the process ID of the running member process, or 0.
func (m *Member) PID() int {
	p := m.current()
	if p == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Running reports whether the member process is alive.
func (m *Member) Running() bool { return m.current() != nil }

// current returns the live process, or nil.
func (m *Member) current() *process {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil || m.proc.exited() {
		return nil
	}
	return m.proc
}

// Status is a member's raft view, as reported by the member itself.
type Status struct {
	ID           uint64 // this member's ID
	Leader       uint64 // the leader this member follows; 0 when none is known
	AppliedIndex uint64 // last raft entry applied to the store
	RaftIndex    uint64 // last raft entry known committed
	Term         uint64
	Ready        bool // the member has joined the cluster and serves clients
}

// IsLeader reports whether the member considers itself the leader.
func (s Status) IsLeader() bool { return s.Leader != 0 && s.Leader == s.ID }

// Status asks the member process for its raft status. It works while the
// member's client port is black-holed or its peers are cut, because the
// question goes over the process's stdin, not the network.
func (m *Member) Status(ctx context.Context) (Status, error) {
	p := m.current()
	if p == nil {
		return Status{}, fmt.Errorf("v2cluster: %s: %w", m.name, errNotRunning)
	}
	line, err := p.command(ctx, "status")
	if err != nil {
		return Status{}, fmt.Errorf("v2cluster: %s: %w", m.name, err)
	}
	var raw struct {
		ID, Leader         string
		Applied, RaftIndex uint64
		Term               uint64
		Ready              bool
	}
	if err := json.Unmarshal([]byte(line), &raw); err != nil {
		return Status{}, fmt.Errorf("v2cluster: %s: status %q: %w", m.name, line, err)
	}
	s := Status{AppliedIndex: raw.Applied, RaftIndex: raw.RaftIndex, Term: raw.Term, Ready: raw.Ready}
	if s.ID, err = strconv.ParseUint(raw.ID, 16, 64); err != nil {
		return Status{}, fmt.Errorf("v2cluster: %s: status id: %w", m.name, err)
	}
	if s.Leader, err = strconv.ParseUint(raw.Leader, 16, 64); err != nil {
		return Status{}, fmt.Errorf("v2cluster: %s: status leader: %w", m.name, err)
	}
	return s, nil
}

// Kill ends the member process with SIGKILL, as a crash would, and waits
// until it is gone. The data directory is kept. Killing a member that is not
// running does nothing.
func (m *Member) Kill() error {
	m.mu.Lock()
	p := m.proc
	m.mu.Unlock()
	if p == nil {
		return nil
	}
	return p.kill()
}

// Stop closes the member gracefully (etcd's own Close), killing it if that
// takes longer than stopTimeout. The data directory is kept.
func (m *Member) Stop() error {
	m.mu.Lock()
	p := m.proc
	m.mu.Unlock()
	if p == nil {
		return nil
	}
	return p.stop()
}

// Restart starts the member again on the same ports and data directory and
// waits until it has rejoined the cluster. The member must not be running.
// Cuts made by CutPeers on the old process are gone; cuts held by the other
// members against this one stay until MendPeers.
func (m *Member) Restart(ctx context.Context) error {
	if m.Running() {
		return fmt.Errorf("v2cluster: %s: restart: still running", m.name)
	}
	p, err := m.spawn("existing")
	if err != nil {
		return err
	}
	return p.waitFor(ctx, p.ready, "ready")
}

// CutPeers partitions the member from every other member at the raft level,
// in both directions, as etcd's own InjectPartition does: raft messages
// between them are dropped while client ports stay up. A cut follower keeps
// answering clients from a store that falls behind while writes go on
// elsewhere; a cut leader loses its leadership. Members that are not
// running are cut on this side only.
func (m *Member) CutPeers() error { return m.peerCommand("cut") }

// MendPeers undoes CutPeers, so that the member catches up.
func (m *Member) MendPeers() error { return m.peerCommand("mend") }

// commandTimeout bounds the commands that take no context. A member answers
// them at once; only a hung process takes longer.
const commandTimeout = 10 * time.Second

func (m *Member) peerCommand(verb string) error {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	self := m.current()
	if self == nil {
		return fmt.Errorf("v2cluster: %s: %s: %w", m.name, verb, errNotRunning)
	}
	for _, o := range m.c.members {
		if o == m {
			continue
		}
		if _, err := self.command(ctx, fmt.Sprintf("%s %x", verb, o.id)); err != nil {
			return fmt.Errorf("v2cluster: %s: %s %s: %w", m.name, verb, o.name, err)
		}
		if op := o.current(); op != nil {
			if _, err := op.command(ctx, fmt.Sprintf("%s %x", verb, m.id)); err != nil {
				return fmt.Errorf("v2cluster: %s: %s %s: %w", o.name, verb, m.name, err)
			}
		}
	}
	return nil
}

// spawn starts a member process and waits for nothing; the caller waits for
// STARTED or READY. state is etcd's initial-cluster-state.
func (m *Member) spawn(state string) (*process, error) {
	c := m.c
	args := []string{
		"-name", m.name,
		"-data-dir", m.dataDir,
		"-listen-client-urls", m.DirectURL(),
		"-advertise-client-urls", m.DirectURL(),
		"-listen-peer-urls", m.peerURL,
		"-initial-advertise-peer-urls", m.peerURL,
		"-initial-cluster", c.initialCluster,
		"-initial-cluster-state", state,
		"-initial-cluster-token", c.token,
		"-log-level", c.cfg.LogLevel,
		"-heartbeat-interval", strconv.FormatInt(c.cfg.HeartbeatInterval.Milliseconds(), 10),
		"-election-timeout", strconv.FormatInt(c.cfg.ElectionTimeout.Milliseconds(), 10),
	}
	if t := c.cfg.TLS; t != nil {
		args = append(args, "-cert-file", t.CertFile, "-key-file", t.KeyFile)
		if t.TrustedCAFile != "" {
			args = append(args, "-trusted-ca-file", t.TrustedCAFile)
		}
	}
	cmd := exec.Command(c.bin, args...)
	cmd.SysProcAttr = sysProcAttr()
	p := &process{
		cmd:     cmd,
		name:    m.name,
		started: make(chan struct{}),
		ready:   make(chan struct{}),
		resp:    make(chan string, 1),
		done:    make(chan struct{}),
		stderr:  &tail{max: 32 << 10, copyTo: c.cfg.Stderr},
	}
	cmd.Stderr = p.stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("v2cluster: %s: %w", m.name, err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("v2cluster: %s: %w", m.name, err)
	}
	p.stdin = stdin
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc != nil && !m.proc.exited() {
		return nil, fmt.Errorf("v2cluster: %s: already running", m.name)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("v2cluster: %s: %w", m.name, err)
	}
	m.proc = p
	go p.readLoop(stdout)
	return p, nil
}

// process is one run of the member binary and its line protocol.
type process struct {
	cmd  *exec.Cmd
	name string

	stdinMu sync.Mutex // guards writes to stdin and its closing
	stdin   io.WriteCloser

	// cmdMu makes commands strictly sequential, so that the one answer
	// line in resp always belongs to the command that holds it.
	cmdMu sync.Mutex
	resp  chan string

	started, ready chan struct{} // closed on the STARTED and READY lines
	done           chan struct{} // closed once the process is reaped
	waitErr        error         // set before done is closed
	stderr         *tail
}

// readLoop dispatches stdout lines, then reaps the process: Wait must not
// run before stdout has been read to the end.
func (p *process) readLoop(stdout io.Reader) {
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "STARTED":
			closeOnce(p.started)
		case line == "READY":
			closeOnce(p.ready)
		case line == "OK" || strings.HasPrefix(line, "ERR") || strings.HasPrefix(line, "{"):
			select {
			case p.resp <- line:
			default: // an answer nobody waits for can only be a protocol bug
			}
		default:
			// Something other than the protocol wrote to stdout; keep it
			// with the logs so that it shows in errors.
			fmt.Fprintln(p.stderr, "stdout:", line)
		}
	}
	_, _ = io.Copy(io.Discard, stdout)
	p.waitErr = p.cmd.Wait()
	close(p.done)
}

// closeOnce closes ch unless it is closed already: a repeated protocol line
// must not panic the test process.
func closeOnce(ch chan struct{}) {
	select {
	case <-ch:
	default:
		close(ch)
	}
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// command sends one command line and returns its answer. An "ERR" answer
// is returned as an error.
func (p *process) command(ctx context.Context, line string) (string, error) {
	p.cmdMu.Lock()
	if err := p.send(line); err != nil {
		p.cmdMu.Unlock()
		return "", err
	}
	select {
	case ans := <-p.resp:
		p.cmdMu.Unlock()
		if rest, ok := strings.CutPrefix(ans, "ERR"); ok {
			return "", fmt.Errorf("%s: %s", line, strings.TrimSpace(rest))
		}
		return ans, nil
	case <-p.done:
		p.cmdMu.Unlock()
		return "", fmt.Errorf("%s: %w", line, p.exitError())
	case <-ctx.Done():
		// The answer is still due: hold the lock until it arrives (or the
		// process ends), so that it cannot be taken for the next answer.
		go func() {
			select {
			case <-p.resp:
			case <-p.done:
			}
			p.cmdMu.Unlock()
		}()
		return "", fmt.Errorf("%s: %w", line, context.Cause(ctx))
	}
}

func (p *process) send(line string) error {
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	if p.stdin == nil {
		return errNotRunning
	}
	if _, err := io.WriteString(p.stdin, line+"\n"); err != nil {
		return fmt.Errorf("%s: %w", line, err)
	}
	return nil
}

func (p *process) closeStdin() {
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	if p.stdin != nil {
		_ = p.stdin.Close()
		p.stdin = nil
	}
}

// waitFor waits until ch is closed, the process exits or ctx ends. On
// failure the process is killed, since a member that never became ready is
// of no use and must not linger.
func (p *process) waitFor(ctx context.Context, ch <-chan struct{}, what string) error {
	select {
	case <-ch:
		return nil
	case <-p.done:
		return fmt.Errorf("v2cluster: %s exited before %s: %w", p.name, what, p.exitError())
	case <-ctx.Done():
		_ = p.kill()
		return fmt.Errorf("v2cluster: %s not %s: %w\n%s", p.name, what, context.Cause(ctx), p.stderr.String())
	}
}

func (p *process) exitError() error {
	<-p.done
	err := p.waitErr
	if err == nil {
		err = fmt.Errorf("exit status 0")
	}
	if s := p.stderr.String(); s != "" {
		return fmt.Errorf("%w; stderr:\n%s", err, s)
	}
	return err
}

// kill sends SIGKILL and waits until the process has been reaped.
func (p *process) kill() error {
	if p.exited() {
		return nil
	}
	err := killGroup(p.cmd.Process)
	p.closeStdin()
	<-p.done
	return err
}

// stop asks for a graceful close by closing stdin (the member treats end of
// input as quit) and kills the process if it is still there after
// stopTimeout.
func (p *process) stop() error {
	if p.exited() {
		return nil
	}
	p.closeStdin()
	t := time.NewTimer(stopTimeout)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
		if err := p.kill(); err != nil {
			return err
		}
		return fmt.Errorf("v2cluster: %s did not stop within %v and was killed", p.name, stopTimeout)
	}
}

// tail keeps the last max bytes written to it: the member's stderr, shown in
// errors. It also copies everything to copyTo when that is set.
type tail struct {
	mu     sync.Mutex
	max    int
	buf    []byte
	copyTo io.Writer
}

func (t *tail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.copyTo != nil {
		_, _ = t.copyTo.Write(b)
	}
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(b), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
