package faultproxy

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// echoServer echoes every connection, after writing greeting (if any).
type echoServer struct {
	ln       net.Listener
	greeting string
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
}

func newEcho(t *testing.T, greeting string) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &echoServer{ln: ln, greeting: greeting, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(s.close)
	return s
}

func (s *echoServer) addr() string { return s.ln.Addr().String() }

func (s *echoServer) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				_ = c.Close()
			}()
			if s.greeting != "" {
				if _, err := io.WriteString(c, s.greeting); err != nil {
					return
				}
			}
			_, _ = io.Copy(c, c)
		}()
	}
}

func (s *echoServer) close() {
	_ = s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func newProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := New(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// roundTrip writes msg and expects it back within a generous deadline.
func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	expect(t, c, msg)
}

func expect(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read: %v", err)
	}
	if string(buf) != msg {
		t.Fatalf("got %q, want %q", buf, msg)
	}
}

type readResult struct {
	data []byte
	err  error
}

// pendingRead reads n bytes from c in the background. The read ends when
// the data arrives or c is closed (the test's cleanup closes it).
func pendingRead(c net.Conn, n int) <-chan readResult {
	ch := make(chan readResult, 1)
	go func() {
		buf := make([]byte, n)
		k, err := io.ReadFull(c, buf)
		ch <- readResult{buf[:k], err}
	}()
	return ch
}

// assertPending checks that r has not completed while several round trips
// on the control connection did: the proxy holds the bytes, not just slowly.
func assertPending(t *testing.T, r <-chan readResult, control net.Conn) {
	t.Helper()
	for i := range 20 {
		roundTrip(t, control, fmt.Sprintf("ctl%02d", i))
	}
	select {
	case res := <-r:
		t.Fatalf("read completed while it should be held: %q, %v", res.data, res.err)
	default:
	}
}

// settle waits until n bytes have been counted in each direction: counters
// move just after each write, so they may trail what the client has read.
func settle(t *testing.T, p *Proxy, n int64) {
	t.Helper()
	waitFor(t, "byte counters", func() bool {
		s := p.Stats()
		return s.BytesToServer == n && s.BytesToClient == n
	})
}

func await(t *testing.T, r <-chan readResult) readResult {
	t.Helper()
	select {
	case res := <-r:
		return res
	case <-time.After(15 * time.Second):
		t.Fatal("timed out waiting for read")
		return readResult{}
	}
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// expectRefused dials addr and expects the connection to be reset: either
// at once (the reset can beat connect's completion on loopback) or on the
// first read.
func expectRefused(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("dial: %v, want reset", err)
		}
		return
	}
	defer func() { _ = c.Close() }()
	if res := await(t, pendingRead(c, 1)); !isReset(res.err) {
		t.Fatalf("read: %q, %v; want reset", res.data, res.err)
	}
}

func TestForwardLargePayload(t *testing.T) {
	echo := newEcho(t, "")
	p := newProxy(t, echo.addr())
	c := dial(t, p.Addr())

	payload := make([]byte, 1<<20)
	_, _ = rand.Read(payload)
	payload[0] = 0 // not a request: Streams must stay 0
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		errc <- err
	}()
	got := make([]byte, len(payload))
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("payload corrupted")
	}
	want := Stats{Accepted: 1, Active: 1, BytesToServer: 1 << 20, BytesToClient: 1 << 20}
	settle(t, p, 1<<20)
	if s := p.Stats(); s != want {
		t.Fatalf("stats %+v, want %+v", s, want)
	}
	_ = c.Close()
	waitFor(t, "connection closed", func() bool { return p.Stats().Active == 0 })
	p.ResetStats()
	if s := p.Stats(); s != (Stats{}) {
		t.Fatalf("after ResetStats: %+v", s)
	}
}

func TestHalfClose(t *testing.T) {
	echo := newEcho(t, "")
	p := newProxy(t, echo.addr())
	c := dial(t, p.Addr())
	if _, err := io.WriteString(c, "bye"); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	// The echo server sees EOF, finishes echoing and closes: we read all, then EOF.
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "bye" {
		t.Fatalf("got %q, %v", got, err)
	}
	waitFor(t, "connection gone", func() bool { return p.Stats().Active == 0 })
}

func TestLatencyPreservesOrder(t *testing.T) {
	echo := newEcho(t, "")
	p := newProxy(t, echo.addr())
	p.SetLatency(time.Millisecond, 3*time.Millisecond) // jitter larger than the delay
	c := dial(t, p.Addr())

	const n = 300
	var want bytes.Buffer
	r := pendingRead(c, n*6)
	for i := range n {
		msg := fmt.Sprintf("m%04d,", i)
		want.WriteString(msg)
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
	}
	res := await(t, r)
	if res.err != nil {
		t.Fatal(res.err)
	}
	if !bytes.Equal(res.data, want.Bytes()) {
		t.Fatalf("order not preserved:\n got %q\nwant %q", res.data, want.Bytes())
	}
}

func TestLatencyHoldsBytesUntilDue(t *testing.T) {
	echo := newEcho(t, "")
	slow := newProxy(t, echo.addr())
	fast := newProxy(t, echo.addr())
	c := dial(t, slow.Addr())
	roundTrip(t, c, "warm")
	settle(t, slow, 4)
	control := dial(t, fast.Addr())

	slow.SetLatency(time.Hour, 0)
	r := pendingRead(c, 5)
	if _, err := io.WriteString(c, "hello"); err != nil {
		t.Fatal(err)
	}
	assertPending(t, r, control)
	if got := slow.Stats().BytesToServer; got != 4 {
		t.Fatalf("BytesToServer = %d while delayed, want 4", got)
	}
	// Lowering the latency applies to bytes already queued.
	slow.SetLatency(0, 0)
	if res := await(t, r); res.err != nil || string(res.data) != "hello" {
		t.Fatalf("got %q, %v", res.data, res.err)
	}
}

func TestPauseResume(t *testing.T) {
	echo := newEcho(t, "")
	p := newProxy(t, echo.addr())
	control := dial(t, newProxy(t, echo.addr()).Addr())
	c := dial(t, p.Addr())
	roundTrip(t, c, "warm")
	settle(t, p, 4)

	p.Pause()
	r := pendingRead(c, 11)
	for _, s := range []string{"held", " in ", "order"} {
		if _, err := io.WriteString(c, s); err != nil {
			t.Fatal(err)
		}
	}
	// A connection opened during the pause is accepted but carries nothing.
	c2 := dial(t, p.Addr())
	r2 := pendingRead(c2, 3)
	if _, err := io.WriteString(c2, "new"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "second connection accepted", func() bool { return p.Stats().Accepted == 2 })
	assertPending(t, r, control)
	assertPending(t, r2, control)
	if s := p.Stats(); s.BytesToServer != 4 || s.BytesToClient != 4 {
		t.Fatalf("bytes moved while paused: %+v", s)
	}

	p.Resume()
	if res := await(t, r); res.err != nil || string(res.data) != "held in ord" {
		t.Fatalf("got %q, %v", res.data, res.err)
	}
	expect(t, c, "er")
	if res := await(t, r2); res.err != nil || string(res.data) != "new" {
		t.Fatalf("got %q, %v", res.data, res.err)
	}
}

func TestBlackhole(t *testing.T) {
	echo := newEcho(t, "")
	p := newProxy(t, echo.addr())
	control := dial(t, newProxy(t, echo.addr()).Addr())
	lossy := dial(t, p.Addr())
	quiet := dial(t, p.Addr())
	roundTrip(t, lossy, "a")
	roundTrip(t, quiet, "b")
	settle(t, p, 2)

	p.Blackhole(true)
	rLossy := pendingRead(lossy, 4)
	if _, err := io.WriteString(lossy, "lost"); err != nil {
		t.Fatal(err)
	}
	fresh := dial(t, p.Addr())
	rFresh := pendingRead(fresh, 4)
	if _, err := io.WriteString(fresh, "gone"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "connection accepted in black hole", func() bool { return p.Stats().Accepted == 3 })
	assertPending(t, rLossy, control)
	assertPending(t, rFresh, control)
	if s := p.Stats(); s.Active != 3 || s.BytesToServer != 2 {
		t.Fatalf("stats in black hole: %+v", s)
	}

	p.Blackhole(false)
	// Connections that lost bytes or were accepted in the hole are reset...
	if res := await(t, rLossy); !isReset(res.err) {
		t.Fatalf("lossy connection: %q, %v; want reset", res.data, res.err)
	}
	if res := await(t, rFresh); !isReset(res.err) {
		t.Fatalf("fresh connection: %q, %v; want reset", res.data, res.err)
	}
	// ...one that lost nothing carries on, and new ones flow again.
	roundTrip(t, quiet, "still here")
	roundTrip(t, dial(t, p.Addr()), "flows")
}

func TestResetAll(t *testing.T) {
	echo := newEcho(t, "")
	p := newProxy(t, echo.addr())
	c1 := dial(t, p.Addr())
	c2 := dial(t, p.Addr())
	roundTrip(t, c1, "1")
	roundTrip(t, c2, "2")
	r1, r2 := pendingRead(c1, 1), pendingRead(c2, 1)

	p.ResetAll()
	for _, r := range []<-chan readResult{r1, r2} {
		if res := await(t, r); !errors.Is(res.err, syscall.ECONNRESET) {
			t.Fatalf("got %v, want ECONNRESET", res.err)
		}
	}
	waitFor(t, "no active connections", func() bool { return p.Stats().Active == 0 })
	roundTrip(t, dial(t, p.Addr()), "after reset")
}

func TestRefuseNew(t *testing.T) {
	echo := newEcho(t, "")
	p := newProxy(t, echo.addr())
	old := dial(t, p.Addr())
	roundTrip(t, old, "x")

	p.RefuseNew(true)
	expectRefused(t, p.Addr())
	roundTrip(t, old, "existing connections keep working")
	if s := p.Stats(); s.Accepted != 2 || s.Refused != 1 || s.Active != 1 {
		t.Fatalf("stats %+v", s)
	}

	p.RefuseNew(false)
	roundTrip(t, dial(t, p.Addr()), "accepted again")
}

func TestTargetDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	p := newProxy(t, addr)
	expectRefused(t, p.Addr())
	waitFor(t, "refused counted", func() bool { return p.Stats().Refused == 1 })
}

func TestSetTarget(t *testing.T) {
	a, b := newEcho(t, "A"), newEcho(t, "B")
	p := newProxy(t, a.addr())
	ca := dial(t, p.Addr())
	expect(t, ca, "A")

	p.SetTarget(b.addr())
	if p.Target() != b.addr() {
		t.Fatalf("Target() = %s", p.Target())
	}
	expect(t, dial(t, p.Addr()), "B")
	roundTrip(t, ca, "old connection keeps its target")
}

func TestBandwidth(t *testing.T) {
	echo := newEcho(t, "")
	p := newProxy(t, echo.addr())
	const rate = 128 << 10
	start := time.Now() // no token can exist before this
	p.SetBandwidth(rate)
	c := dial(t, p.Addr())

	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	r := pendingRead(c, len(payload))
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		werr <- err
	}()

	// The token bucket allows at most burst + rate*elapsed bytes, both
	// directions together. Check that invariant while data flows; elapsed is
	// read after the counters, so it can only be generous.
	var moved int64
	for moved == 0 || time.Since(start) < 200*time.Millisecond {
		s := p.Stats()
		el := time.Since(start).Seconds()
		moved = s.BytesToServer + s.BytesToClient
		if limit := int64(maxBurst + rate*el + 1); moved > limit {
			t.Fatalf("moved %d bytes in %.3fs, cap allows %d", moved, el, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if moved >= 2*int64(len(payload)) {
		t.Fatal("everything moved under the cap")
	}

	p.SetBandwidth(0) // wakes writers waiting for tokens
	res := await(t, r)
	if res.err != nil || !bytes.Equal(res.data, payload) {
		t.Fatalf("payload corrupted or lost: %v", res.err)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
}

func TestCloseTearsDownConnections(t *testing.T) {
	echo := newEcho(t, "")
	p, err := New(echo.addr())
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, p.Addr())
	roundTrip(t, c, "x")
	p.Pause() // a writer blocked on a fault must not hold Close up
	if _, err := io.WriteString(c, "y"); err != nil {
		t.Fatal(err)
	}
	r := pendingRead(c, 1)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if res := await(t, r); res.err == nil {
		t.Fatal("read succeeded after Close")
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := net.Dial("tcp", p.Addr()); err == nil {
		t.Fatal("dial succeeded after Close")
	}
}
