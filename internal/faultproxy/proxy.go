// Package faultproxy is a TCP proxy that injects network faults between the
// clients of one etcd member and that member's client port.
//
// A Proxy listens on 127.0.0.1 on a free port and forwards every accepted
// connection to a target address. While it runs, a test can add latency and
// jitter, cap the bandwidth, pause forwarding, black-hole all bytes, reset
// every connection or refuse new ones. It also counts, from outside the
// client, how many requests reached the target: see Stats.Streams.
//
// All methods are safe for concurrent use. Fault settings apply at once to
// bytes already queued inside the proxy as well as to bytes yet to come.
package faultproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

const (
	// chunkSize is the largest read forwarded as one unit (one latency stamp).
	chunkSize = 32 << 10
	// queueLen bounds the chunks buffered per direction; when full, the
	// reader stops reading and TCP flow control pushes back on the sender,
	// so a paused or slowed proxy holds at most queueLen*chunkSize bytes per
	// direction and never drops any.
	queueLen = 8
	// maxBurst bounds the token bucket so that a bandwidth cap is smooth
	// rather than one-second bursts.
	maxBurst = 16 << 10
	// dialTimeout bounds the connection to the target.
	dialTimeout = 5 * time.Second
)

// Stats are counters of a Proxy since it was created or since ResetStats.
type Stats struct {
	// Accepted counts accepted client connections, refused ones included.
	Accepted int64
	// Refused counts connections closed at once because of RefuseNew or
	// because the target could not be dialled.
	Refused int64
	// Active is the number of connections open now (not reset by ResetStats).
	Active int64
	// BytesToServer counts bytes written to the target.
	BytesToServer int64
	// BytesToClient counts bytes written back to clients.
	BytesToClient int64
	// Streams counts requests that reached the target: HTTP/2 streams opened
	// by the client (one per gRPC call, unary or streaming) or HTTP/1.x
	// requests. TLS and other protocols are not parsed and count nothing.
	Streams int64
}

// faults is an immutable snapshot of the fault settings. Setters publish a
// new snapshot and close the old one's changed channel, so that every
// goroutine waiting under the old settings wakes up and re-evaluates.
type faults struct {
	latency, jitter time.Duration
	paused          bool
	blackhole       bool
	refuse          bool
	limiter         *rate.Limiter // nil: unlimited
	changed         chan struct{}
}

// Proxy is a fault-injecting TCP proxy in front of one target address.
type Proxy struct {
	ln     net.Listener
	ctx    context.Context // cancelled by Close; aborts dials
	cancel context.CancelFunc
	wg     sync.WaitGroup

	state atomic.Pointer[faults]

	mu     sync.Mutex // guards target, conns, closed and snapshot publication
	target string
	conns  map[*conn]struct{}
	closed bool

	accepted, refused, active atomic.Int64
	toServer, toClient        atomic.Int64
	streams                   atomic.Int64
}

// New starts a proxy that listens on 127.0.0.1 on a free port and forwards
// to target ("host:port").
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	return start(ln, target), nil
}

func start(ln net.Listener, target string) *Proxy {
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		ln:     ln,
		ctx:    ctx,
		cancel: cancel,
		target: target,
		conns:  make(map[*conn]struct{}),
	}
	p.state.Store(&faults{changed: make(chan struct{})})
	p.wg.Add(1)
	go p.acceptLoop()
	return p
}

// NewUnix starts a proxy that listens on the unix socket path (which must
// not exist; Close removes it) and forwards to target ("host:port"), for
// clients that reach a member through a "unix://" endpoint. Faults and
// counters work as with New.
func NewUnix(path, target string) (*Proxy, error) {
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	return start(ln, target), nil
}

// Addr returns the listening address: "127.0.0.1:PORT", or the socket's
// path for NewUnix.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target returns the address new connections are forwarded to.
func (p *Proxy) Target() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.target
}

// SetTarget changes the address that new connections are forwarded to.
// Open connections keep their target.
func (p *Proxy) SetTarget(target string) {
	p.mu.Lock()
	p.target = target
	p.mu.Unlock()
}

// update publishes a modified copy of the fault settings.
func (p *Proxy) update(f func(*faults)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.updateLocked(f)
}

func (p *Proxy) updateLocked(f func(*faults)) {
	old := p.state.Load()
	next := *old
	next.changed = make(chan struct{})
	f(&next)
	p.state.Store(&next)
	close(old.changed)
}

// SetLatency delays every chunk of bytes, in each direction separately, by d
// plus a uniform random jitter in [-jitter, +jitter] (never below zero), so a
// round trip gains about 2*d. Byte order is preserved in each direction: a
// chunk never overtakes an earlier one. The new setting also applies to
// chunks already waiting in the proxy. d == 0 and jitter == 0 disable it.
func (p *Proxy) SetLatency(d, jitter time.Duration) {
	if d < 0 {
		d = 0
	}
	if jitter < 0 {
		jitter = 0
	}
	p.update(func(f *faults) { f.latency, f.jitter = d, jitter })
}

// Blackhole, when on, swallows every byte in both directions while keeping
// connections open; new connections are accepted, not forwarded, and
// swallow everything too. Turning it off resets (RST) every connection that
// lost bytes to the black hole or was accepted while it was on, because its
// byte stream is no longer whole; connections that lost nothing carry on, and
// new connections are forwarded again.
func (p *Proxy) Blackhole(on bool) {
	p.mu.Lock()
	p.updateLocked(func(f *faults) { f.blackhole = on })
	var victims []*conn
	if !on {
		// A writer marks its connection tainted before it checks the state
		// it swallows under, so every connection that swallowed under the
		// old state is seen here, after the new state is published.
		for c := range p.conns {
			if c.tainted.Load() {
				victims = append(victims, c)
			}
		}
	}
	p.mu.Unlock()
	for _, c := range victims {
		c.teardown(true)
	}
}

// ResetAll closes every open connection with a TCP reset (SO_LINGER 0) on
// both the client and the target side. New connections are not affected.
func (p *Proxy) ResetAll() {
	for _, c := range p.snapshotConns() {
		c.teardown(true)
	}
}

// Pause stops forwarding in both directions. Bytes are buffered, never
// dropped: once the proxy's small buffers are full, TCP flow control holds
// the senders. New connections are accepted and dialled but carry no data.
func (p *Proxy) Pause() { p.update(func(f *faults) { f.paused = true }) }

// Resume undoes Pause: buffered bytes are forwarded in order.
func (p *Proxy) Resume() { p.update(func(f *faults) { f.paused = false }) }

// SetBandwidth caps the bytes forwarded by this proxy per second, both
// directions and all connections together, with a token bucket whose burst
// is at most 16 KiB. bytesPerSec <= 0 removes the cap.
func (p *Proxy) SetBandwidth(bytesPerSec int64) {
	var lim *rate.Limiter
	if bytesPerSec > 0 {
		burst := int(min(bytesPerSec, maxBurst))
		lim = rate.NewLimiter(rate.Limit(bytesPerSec), burst)
	}
	p.update(func(f *faults) { f.limiter = lim })
}

// RefuseNew, when on, makes the proxy accept new connections and close them
// at once with a reset, as a member that is down would. Open connections are
// not affected.
func (p *Proxy) RefuseNew(on bool) { p.update(func(f *faults) { f.refuse = on }) }

// Stats returns the current counters.
func (p *Proxy) Stats() Stats {
	return Stats{
		Accepted:      p.accepted.Load(),
		Refused:       p.refused.Load(),
		Active:        p.active.Load(),
		BytesToServer: p.toServer.Load(),
		BytesToClient: p.toClient.Load(),
		Streams:       p.streams.Load(),
	}
}

// ResetStats zeroes every counter except Active.
func (p *Proxy) ResetStats() {
	p.accepted.Store(0)
	p.refused.Store(0)
	p.toServer.Store(0)
	p.toClient.Store(0)
	p.streams.Store(0)
}

// Close stops the listener, closes every connection and waits for all of
// the proxy's goroutines to finish. It is safe to call more than once.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.wg.Wait()
		return nil
	}
	p.closed = true
	conns := make([]*conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()

	p.cancel()
	err := p.ln.Close()
	for _, c := range conns {
		c.teardown(false)
	}
	p.wg.Wait()
	return err
}

func (p *Proxy) snapshotConns() []*conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	conns := make([]*conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	return conns
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		nc, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || p.ctx.Err() != nil {
				return
			}
			// Transient (e.g. out of file descriptors): back off briefly.
			select {
			case <-p.ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		p.accepted.Add(1)
		c := &conn{p: p, client: nc, done: make(chan struct{})}
		// Settings are published under p.mu, so reading them here makes the
		// decision and the registration atomic with respect to Blackhole.
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = nc.Close()
			return
		}
		f := p.state.Load()
		if f.refuse {
			p.mu.Unlock()
			p.refused.Add(1)
			resetClose(nc)
			continue
		}
		c.tainted.Store(f.blackhole)
		p.conns[c] = struct{}{}
		target := p.target
		p.mu.Unlock()
		p.active.Add(1)
		p.wg.Add(1)
		go p.serve(c, target, f.blackhole)
	}
}

// serve dials the target and runs both directions of one connection.
func (p *Proxy) serve(c *conn, target string, blackholed bool) {
	defer p.wg.Done()
	defer func() {
		c.teardown(false)
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
		p.active.Add(-1)
	}()

	if blackholed {
		// Not forwarded at all: swallow until the client goes away or the
		// black hole is lifted, which resets this tainted connection.
		c.pipe(c.client, nil, nil, nil)
		return
	}

	d := net.Dialer{Timeout: dialTimeout}
	sc, err := d.DialContext(p.ctx, "tcp", target)
	if err != nil {
		p.refused.Add(1)
		c.teardown(true)
		return
	}
	if !c.setServer(sc) {
		return // torn down while dialling
	}

	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		c.pipe(c.client, sc, &p.toServer, &c.counter)
	}()
	go func() {
		defer wg.Done()
		c.pipe(sc, c.client, &p.toClient, nil)
	}()
	wg.Wait()
}

// conn is one proxied connection.
type conn struct {
	p      *Proxy
	client net.Conn

	mu     sync.Mutex
	server net.Conn // nil until dialled, or for black-holed connections
	dead   bool

	done     chan struct{} // closed by teardown
	downOnce sync.Once
	halfDone atomic.Int32 // directions that finished with EOF
	tainted  atomic.Bool  // lost bytes to the black hole

	counter streamCounter // client->server parser, used by one writer only
}

// setServer records the dialled target connection; it reports false (and
// closes sc) if the connection was torn down in the meantime.
func (c *conn) setServer(sc net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		_ = sc.Close()
		return false
	}
	c.server = sc
	return true
}

// teardown closes both sides once; rst sends a TCP reset instead of FIN.
func (c *conn) teardown(rst bool) {
	c.downOnce.Do(func() {
		c.mu.Lock()
		c.dead = true
		sc := c.server
		c.mu.Unlock()
		if rst {
			resetClose(c.client)
			if sc != nil {
				resetClose(sc)
			}
		} else {
			_ = c.client.Close()
			if sc != nil {
				_ = sc.Close()
			}
		}
		close(c.done)
	})
}

func resetClose(nc net.Conn) {
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = nc.Close()
}

type chunk struct {
	buf    *[]byte
	n      int
	readAt time.Time
	jitter float64 // in [-1, 1], scaled by the jitter in force when sent
	eof    bool
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}

// pipe forwards src to dst (dst nil: swallow everything) through a bounded
// queue, so that reading never waits on faults applied by the writer.
func (c *conn) pipe(src, dst net.Conn, bytes *atomic.Int64, sc *streamCounter) {
	q := make(chan chunk, queueLen)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		c.readLoop(src, q)
	}()
	c.writeLoop(dst, q, bytes, sc)
	<-readerDone
}

func (c *conn) readLoop(src net.Conn, q chan<- chunk) {
	for {
		bp := bufPool.Get().(*[]byte)
		n, err := src.Read(*bp)
		ch := chunk{buf: bp, n: n, readAt: time.Now(), jitter: rand.Float64()*2 - 1}
		if n == 0 {
			bufPool.Put(bp)
			ch.buf = nil
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				// Reset, or closed by teardown: propagate as a reset. Data
				// still queued is lost, as with a real RST.
				c.teardown(true)
				return
			}
			ch.eof = true
		}
		if n == 0 && !ch.eof {
			continue
		}
		select {
		case q <- ch:
		case <-c.done:
			return
		}
		if ch.eof {
			return
		}
	}
}

func (c *conn) writeLoop(dst net.Conn, q <-chan chunk, bytes *atomic.Int64, sc *streamCounter) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		var ch chunk
		select {
		case ch = <-q:
		case <-c.done:
			return
		}
		if ch.buf != nil {
			ok := c.forward(dst, ch, timer, bytes, sc)
			bufPool.Put(ch.buf)
			if !ok {
				return
			}
		}
		if ch.eof {
			if !c.waitRelease(ch, timer) {
				return
			}
			if f := c.p.state.Load(); f.blackhole && dst != nil {
				// The black hole swallows the FIN too.
				c.tainted.Store(true)
				if c.p.state.Load() == f {
					return
				}
			}
			c.closeWrite(dst)
			return
		}
	}
}

// closeWrite passes a client's or server's half-close on; once both
// directions have ended the connection is finished.
func (c *conn) closeWrite(dst net.Conn) {
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	if c.halfDone.Add(1) == 2 || dst == nil {
		c.teardown(false)
	}
}

// waitRelease waits until the chunk's latency has passed and the proxy is
// not paused, re-evaluating whenever the settings change. It reports false
// if the connection was torn down.
func (c *conn) waitRelease(ch chunk, timer *time.Timer) bool {
	for {
		f := c.p.state.Load()
		if f.blackhole {
			return true
		}
		if f.paused {
			select {
			case <-f.changed:
				continue
			case <-c.done:
				return false
			}
		}
		delay := f.latency + time.Duration(ch.jitter*float64(f.jitter))
		wait := time.Until(ch.readAt.Add(max(delay, 0)))
		if wait <= 0 {
			return true
		}
		timer.Reset(wait)
		select {
		case <-timer.C:
			return true
		case <-f.changed:
			timer.Stop()
		case <-c.done:
			return false
		}
	}
}

// forward writes one chunk, honouring every fault; false means the
// connection is finished.
func (c *conn) forward(dst net.Conn, ch chunk, timer *time.Timer, bytes *atomic.Int64, sc *streamCounter) bool {
	data := (*ch.buf)[:ch.n]
	for len(data) > 0 {
		if !c.waitRelease(ch, timer) {
			return false
		}
		f := c.p.state.Load()
		if f.blackhole || dst == nil {
			// Mark first, then confirm the state: see Blackhole.
			c.tainted.Store(true)
			if c.p.state.Load() != f && dst != nil {
				continue
			}
			return true
		}
		piece := data
		if f.limiter != nil {
			if b := f.limiter.Burst(); len(piece) > b {
				piece = piece[:b]
			}
			r := f.limiter.ReserveN(time.Now(), len(piece))
			if d := r.Delay(); d > 0 {
				timer.Reset(d)
				select {
				case <-timer.C:
				case <-f.changed:
					timer.Stop()
					r.Cancel()
					continue
				case <-c.done:
					timer.Stop()
					r.Cancel()
					return false
				}
			}
		}
		n, err := dst.Write(piece)
		bytes.Add(int64(n))
		if sc != nil && n > 0 {
			c.p.streams.Add(sc.feed(piece[:n]))
		}
		if err != nil {
			c.teardown(true)
			return false
		}
		data = data[n:]
	}
	return true
}
