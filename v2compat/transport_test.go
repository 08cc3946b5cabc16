package v2compat

//lint:file-ignore SA1019 req.Cancel is how every v2 client cancels; these tests check that it works.

import (
	"bufio"
	"context"
	"errors"
	"io/ioutil"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestNewRejectsBadInput(t *testing.T) {
	inner := &http.Transport{}
	ok := []string{"http://127.0.0.1:2379"}
	for _, tc := range []struct {
		name string
		in   CancelableTransport
		eps  []string
		opts []Option
		want string
	}{
		{"nil inner", nil, ok, nil, "nil inner transport"},
		{"no endpoints", inner, nil, nil, "no endpoints"},
		{"scheme", inner, []string{"ftp://a:1"}, nil, `"ftp://a:1"`},
		{"no scheme", inner, []string{"127.0.0.1:2379"}, nil, `"127.0.0.1:2379"`},
		{"no host", inner, []string{"http://"}, nil, `"http://" has no host`},
		{"user info", inner, []string{"http://u:p@a:1"}, nil, "user info"},
		{"path", inner, []string{"http://a:1/v2"}, nil, `"http://a:1/v2" must be scheme://host[:port] only`},
		{"parse", inner, []string{"http://a b"}, nil, `"http://a b"`},
		{"poll interval", inner, ok, []Option{WithLeaderPollInterval(time.Millisecond)}, "leader poll interval 1ms"},
		{"header timeout", inner, ok, []Option{WithHeaderTimeout(-time.Second)}, "header timeout -1s"},
		{"retries low", inner, ok, []Option{WithMonotonicRetries(-1)}, "monotonic retries -1"},
		{"retries high", inner, ok, []Option{WithMonotonicRetries(17)}, "monotonic retries 17"},
		{"picker", inner, ok, []Option{WithPickerConfig(picker.Config{Policy: "fastest"})}, `"fastest"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := New(tc.in, tc.eps, tc.opts...)
			if err == nil {
				tr.Close()
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestSetEndpoints(t *testing.T) {
	tr, err := New(&http.Transport{}, []string{"http://a:1", "http://B:2", "http://b:2", "https://c:443/"}, WithLeaderPollInterval(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if got, want := strings.Join(tr.Endpoints(), " "), "http://a:1 http://B:2 https://c:443"; got != want {
		t.Fatalf("Endpoints() = %q, want %q (duplicates dropped, order kept)", got, want)
	}
	if err := tr.SetEndpoints([]string{"http://a:1", "gopher://d"}); err == nil || !strings.Contains(err.Error(), `"gopher://d"`) {
		t.Fatalf("SetEndpoints with a bad URL: %v", err)
	}
	if len(tr.Endpoints()) != 3 {
		t.Fatalf("a refused SetEndpoints changed the set: %v", tr.Endpoints())
	}
	if err := tr.SetEndpoints(nil); err == nil {
		t.Fatal("SetEndpoints(nil) succeeded")
	}
	if err := tr.SetEndpoints([]string{"http://a:1", "http://e:5"}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(tr.Endpoints(), " "); got != "http://a:1 http://e:5" {
		t.Fatalf("Endpoints() = %q", got)
	}
	if n := len(tr.Stats().Members); n != 2 {
		t.Fatalf("picker has %d endpoints, want 2", n)
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		method, url string
		want        class
	}{
		{"GET", "http://h/v2/keys/a?quorum=false&recursive=false&sorted=false", classRead},
		{"GET", "http://h/v2/keys", classRead},
		{"HEAD", "http://h/v2/keys/a", classRead},
		{"GET", "http://h/v2/keys/a?quorum=true", classQuorumRead},
		{"GET", "http://h/v2/keys/a?wait=true&waitIndex=7", classWatch},
		{"GET", "http://h/v2/keys/a?wait=1&quorum=true", classWatch},
		{"PUT", "http://h/v2/keys/a?prevExist=false", classWrite},
		{"POST", "http://h/v2/keys/dir", classWrite},
		{"DELETE", "http://h/v2/keys/a", classWrite},
		{"GET", "http://h/v2/members", classOther},
		{"GET", "http://h/v2/members/leader", classOther},
		{"POST", "http://h/v2/members", classOther},
		{"GET", "http://h/version", classOther},
		{"GET", "http://h/v2/stats/self", classOther},
		{"GET", "http://h/v2/keysfoo", classOther},
	} {
		req, _ := http.NewRequest(tc.method, tc.url, nil)
		if got := classify(req); got != tc.want {
			t.Errorf("%s %s: class %d, want %d", tc.method, tc.url, got, tc.want)
		}
	}
}

type ctxKey struct{}

// The rewritten request is a shallow copy: Cancel, context values, headers
// and body survive; only scheme and host change (and Host follows them).
func TestRewriteKeepsRequest(t *testing.T) {
	inner := &recordingTransport{answer: func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Header: http.Header{"X-Etcd-Index": {"5"}}, Body: http.NoBody, Request: r}, nil
	}}
	tr, err := New(inner, []string{"http://a:1", "https://b:2"}, WithLeaderPollInterval(-1), WithPickerConfig(picker.Config{Policy: picker.RoundRobin}))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	for i := 0; i < 4; i++ {
		ctx, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "v"))
		req, _ := http.NewRequest("PUT", "http://a:1/v2/keys/x?prevExist=false", strings.NewReader("value=1"))
		req = req.WithContext(ctx)
		ch := make(chan struct{})
		req.Cancel = ch
		req.Header.Set("X-Test", "yes")
		if i == 3 {
			req.Host = "virtual.example"
		}
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got := inner.requests()[i]
		switch {
		case got == req:
			t.Fatal("the caller's request was sent, not a copy")
		case got.Cancel != req.Cancel:
			t.Fatal("req.Cancel was dropped")
		case got.Context().Value(ctxKey{}) != "v":
			t.Fatal("the context's values were dropped")
		case got.Header.Get("X-Test") != "yes" || got.Body != req.Body || got.Method != "PUT":
			t.Fatal("method, header or body changed")
		case got.URL.Path != "/v2/keys/x" || got.URL.RawQuery != "prevExist=false":
			t.Fatalf("path or query changed: %v", got.URL)
		case req.URL.Host != "a:1" || req.URL.Scheme != "http":
			t.Fatalf("the caller's URL was modified: %v", req.URL)
		}
		wantHost := map[bool]string{true: "a:1", false: "b:2"}[got.URL.Scheme == "http"]
		if got.URL.Host != wantHost {
			t.Fatalf("rewritten to %s://%s", got.URL.Scheme, got.URL.Host)
		}
		if i < 3 && got.Host != "" {
			t.Fatalf("Host header %q does not follow the URL", got.Host)
		}
		if i == 3 && got.Host != "virtual.example" {
			t.Fatalf("a deliberate Host override was lost: %q", got.Host)
		}
		// The caller's cancellation reaches the copy.
		cancel()
		select {
		case <-got.Context().Done():
		case <-time.After(time.Second):
			t.Fatal("canceling the caller's context did not cancel the copy's")
		}
	}
	hosts := map[string]bool{}
	for _, r := range inner.requests() {
		hosts[r.URL.Host] = true
	}
	if len(hosts) != 2 {
		t.Fatalf("round robin used %v", hosts)
	}
}

func TestPassThrough(t *testing.T) {
	inner := &recordingTransport{answer: func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Header: http.Header{}, Body: http.NoBody}, nil
	}}
	tr, err := New(inner, []string{"http://a:1"}, WithLeaderPollInterval(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	req, _ := http.NewRequest("GET", "http://elsewhere:9/v2/keys/x", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := inner.requests(); len(got) != 1 || got[0] != req {
		t.Fatal("a request outside the set was not passed through unchanged")
	}
	tr.CancelRequest(req)
	if len(inner.canceled) != 1 || inner.canceled[0] != req {
		t.Fatal("CancelRequest of a passed-through request did not reach the inner transport")
	}
	if s := tr.Stats(); s.PassedThrough != 1 || s.Requests != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// CancelRequest on the caller's request cancels the rewritten one on the
// inner transport, and the member is not blamed.
func TestCancelRequestMapsToRewritten(t *testing.T) {
	started := make(chan *http.Request, 1)
	inner := &recordingTransport{answer: func(r *http.Request) (*http.Response, error) {
		started <- r
		<-r.Context().Done()
		return nil, r.Context().Err()
	}}
	tr, err := New(inner, []string{"http://a:1"}, WithLeaderPollInterval(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	req, _ := http.NewRequest("GET", "http://a:1/v2/keys/x", nil)
	errc := make(chan error, 1)
	go func() {
		_, err := tr.RoundTrip(req)
		errc <- err
	}()
	sent := <-started
	tr.CancelRequest(req)
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("canceled request succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("CancelRequest did not end the request")
	}
	inner.mu.Lock()
	canceled := append([]*http.Request(nil), inner.canceled...)
	inner.mu.Unlock()
	if len(canceled) != 1 || canceled[0] != sent {
		t.Fatalf("inner CancelRequest got %v, want the rewritten request", canceled)
	}
	if s := stats(tr, "http://a:1"); s.Failures != 0 || s.InFlight != 0 {
		t.Fatalf("a canceled request was blamed or left in flight: %+v", s)
	}
}

// With a real *http.Transport, each of the three ways a v2 client cancels
// ends a request that hangs before its headers.
func TestCancelWithHTTPTransport(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	inner := &http.Transport{}
	defer inner.CloseIdleConnections()
	tr, err := New(inner, []string{srv.URL}, WithLeaderPollInterval(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	for _, how := range []string{"req.Cancel", "context", "CancelRequest"} {
		t.Run(how, func(t *testing.T) {
			req, _ := http.NewRequest("GET", srv.URL+"/v2/keys/x", nil)
			ch := make(chan struct{})
			req.Cancel = ch
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req = req.WithContext(ctx)
			errc := make(chan error, 1)
			go func() {
				resp, err := tr.RoundTrip(req)
				if err == nil {
					resp.Body.Close()
				}
				errc <- err
			}()
			time.Sleep(50 * time.Millisecond)
			switch how {
			case "req.Cancel":
				close(ch)
			case "context":
				cancel()
			default:
				tr.CancelRequest(req)
			}
			select {
			case err := <-errc:
				if err == nil {
					t.Fatal("canceled request succeeded")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the request did not end")
			}
			if s := stats(tr, strings.ToLower(srv.URL)); s.Failures != 0 {
				t.Fatalf("a canceled request was blamed: %+v", s)
			}
		})
	}
}

func TestHeaderTimeout(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	defer srv.Close()
	inner := &http.Transport{}
	defer inner.CloseIdleConnections()
	const d = 150 * time.Millisecond
	tr, err := New(inner, []string{srv.URL}, WithLeaderPollInterval(-1), WithHeaderTimeout(d))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	key := strings.ToLower(srv.URL)

	// The transport's own timer.
	req, _ := http.NewRequest("GET", srv.URL+"/v2/keys/x", nil)
	start := time.Now()
	_, err = tr.RoundTrip(req)
	var hte *HeaderTimeoutError
	if !errors.As(err, &hte) || hte.Limit != d || !hte.Timeout() {
		t.Fatalf("error %v, want a HeaderTimeoutError", err)
	}
	if el := time.Since(start); el < d { // a timer cannot fire early; no upper bound on a busy machine
		t.Fatalf("timed out after %v, before the %v limit", el, d)
	}
	if s := stats(tr, key); s.Failures != 1 || s.Estimate < d {
		t.Fatalf("a header timeout was not charged: %+v", s)
	}

	// The v2 client's own header timeout closes req.Cancel when it is
	// due: that counts as a timeout too …
	req, _ = http.NewRequest("GET", srv.URL+"/v2/keys/x", nil)
	ch := make(chan struct{})
	req.Cancel = ch
	time.AfterFunc(d-d/20, func() { close(ch) })
	if _, err := tr.RoundTrip(req); err == nil {
		t.Fatal("request succeeded")
	}
	if s := stats(tr, key); s.Failures != 2 {
		t.Fatalf("a cancel at the header timeout was not charged: %+v", s)
	}
	// … and a cancel well before it is the caller's choice.
	req, _ = http.NewRequest("GET", srv.URL+"/v2/keys/x", nil)
	ch = make(chan struct{})
	req.Cancel = ch
	time.AfterFunc(d/5, func() { close(ch) })
	if _, err := tr.RoundTrip(req); err == nil {
		t.Fatal("request succeeded")
	}
	if s := stats(tr, key); s.Failures != 2 {
		t.Fatalf("an early cancel was charged: %+v", s)
	}

	// Watches are exempt: a long poll may wait for minutes.
	ctx, cancel := context.WithTimeout(context.Background(), 3*d)
	defer cancel()
	req, _ = http.NewRequest("GET", srv.URL+"/v2/keys/x?wait=true", nil)
	_, err = tr.RoundTrip(req.WithContext(ctx))
	if err == nil || errors.As(err, &hte) || ctx.Err() == nil {
		t.Fatalf("watch ended with %v before its context did; the header timeout applied to it", err)
	}
}

func TestFailureClassification(t *testing.T) {
	codes := map[string]int{"/v2/keys/500": 500, "/v2/keys/503": 503, "/v2/keys/404": 404, "/v2/keys/412": 412, "/v2/keys/400": 400}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/keys/reset" {
			// Headers, part of the body, then a cut connection.
			conn, buf, _ := w.(http.Hijacker).Hijack()
			buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100\r\nX-Etcd-Index: 3\r\n\r\n{\"partial")
			buf.Flush()
			conn.Close()
			return
		}
		w.Header().Set("X-Etcd-Index", "3")
		w.WriteHeader(codes[r.URL.Path])
		w.Write([]byte(`{"errorCode":100,"message":"x","index":3}`))
	}))
	defer srv.Close()
	inner := &http.Transport{}
	defer inner.CloseIdleConnections()
	// Ejection off, so that every request reaches the one member.
	tr, err := New(inner, []string{srv.URL}, WithLeaderPollInterval(-1), WithPickerConfig(picker.Config{EjectAfter: -1}))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	key := strings.ToLower(srv.URL)
	failures := func() int64 { return stats(tr, key).Failures }
	for _, tc := range []struct {
		path  string
		blame bool
	}{
		{"/v2/keys/404", false}, // key not found: the member did its job
		{"/v2/keys/412", false}, // compare failed
		{"/v2/keys/400", false},
		{"/v2/keys/500", true},
		{"/v2/keys/503", true}, // no leader
	} {
		before := failures()
		do(t, tr, "GET", srv.URL+tc.path)
		want := before
		if tc.blame {
			want++ // once: one ticket per attempt
		}
		if got := failures(); got != want {
			t.Errorf("%s: %d failures charged, want %d", tc.path, got-before, want-before)
		}
	}
	// A cut in the middle of the body blames the member.
	before := failures()
	req, _ := http.NewRequest("GET", srv.URL+"/v2/keys/reset", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bufio.NewReader(resp.Body).ReadString('}'); err == nil {
		t.Fatal("read a cut body without error")
	}
	resp.Body.Close()
	if failures() != before+1 {
		t.Error("a body cut off was not charged")
	}
	if s := stats(tr, key); s.InFlight != 0 {
		t.Fatalf("in flight %d after every body was closed", s.InFlight)
	}

	// A refused connection blames the member.
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	tr2, err := New(inner, []string{deadURL}, WithLeaderPollInterval(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer tr2.Close()
	req, _ = http.NewRequest("GET", deadURL+"/v2/keys/x", nil)
	if _, err := tr2.RoundTrip(req); err == nil {
		t.Fatal("request to a closed port succeeded")
	}
	if s := stats(tr2, strings.ToLower(deadURL)); s.Failures != 1 || s.InFlight != 0 {
		t.Fatalf("refused connection: %+v", s)
	}
}

// A request stays in flight until its body is read to EOF or closed, the
// ticket is handed back once even when both happen, and the latency sample
// is the time to the headers.
func TestInFlightUntilBodyDone(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Etcd-Index", "1")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		if r.URL.Path == "/v2/keys/slowbody" {
			<-release
		}
		w.Write([]byte(`{"action":"get"}`))
	}))
	defer srv.Close()
	inner := &http.Transport{}
	defer inner.CloseIdleConnections()
	tr, err := New(inner, []string{srv.URL}, WithLeaderPollInterval(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	key := strings.ToLower(srv.URL)

	req, _ := http.NewRequest("GET", srv.URL+"/v2/keys/slowbody", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if s := stats(tr, key); s.InFlight != 1 || s.Picks != 1 {
		t.Fatalf("in flight %d, picks %d while the body is unread; want 1 and 1 (one ticket per attempt)", s.InFlight, s.Picks)
	}
	close(release)
	discard(resp.Body) // reads to EOF, then closes: two ends, one Done
	s := stats(tr, key)
	if s.InFlight != 0 {
		t.Fatalf("in flight %d after EOF and Close, want 0", s.InFlight)
	}
	// The body took 300 ms, the headers almost nothing: a sample taken at
	// the end would be ≥ 300 ms. (The estimate of an idle member drifts
	// only toward the median, which is itself here.)
	if s.Estimate >= 200*time.Millisecond {
		t.Fatalf("estimate %v: the sample included the body", s.Estimate)
	}

	// Closed without reading.
	req, _ = http.NewRequest("GET", srv.URL+"/v2/keys/x", nil)
	resp, err = tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp.Body.Close()
	if s := stats(tr, key); s.InFlight != 0 || s.Streams != 0 {
		t.Fatalf("after Close without reading: %+v", s)
	}

	// A watch is a stream, not in flight, until its body is done.
	req, _ = http.NewRequest("GET", srv.URL+"/v2/keys/x?wait=true&waitIndex=2", nil)
	resp, err = tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if s := stats(tr, key); s.Streams != 1 || s.InFlight != 0 {
		t.Fatalf("open watch: %+v", s)
	}
	discard(resp.Body)
	if s := stats(tr, key); s.Streams != 0 {
		t.Fatalf("finished watch: %+v", s)
	}
	tr.callsMu.Lock()
	n := len(tr.calls)
	tr.callsMu.Unlock()
	if n != 0 {
		t.Fatalf("%d calls still registered after every body was closed", n)
	}
	if s := stats(tr, key); s.Picks != 3 || s.Failures != 0 {
		t.Fatalf("3 requests: %d picks, %d failures; want one ticket each and no blame", s.Picks, s.Failures)
	}
}

// The v2 client reads a body in one goroutine and closes it from another
// when its context ends: the read that fails because of that Close is not
// the member's fault, even when its error arrives before Close returns.
func TestCloseDuringReadNotBlamed(t *testing.T) {
	inner := &recordingTransport{answer: func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Header: http.Header{"X-Etcd-Index": {"1"}}, Body: newClosingBody(), Request: r}, nil
	}}
	tr, err := New(inner, []string{"http://a:1"}, WithLeaderPollInterval(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	for i := 0; i < 5; i++ {
		req, _ := http.NewRequest("GET", "http://a:1/v2/keys/x", nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		readErr := make(chan error, 1)
		go func() {
			_, err := ioutil.ReadAll(resp.Body)
			readErr <- err
		}()
		resp.Body.Close()
		if err := <-readErr; err == nil {
			t.Fatal("read a body closed in the middle without error")
		}
	}
	if s := stats(tr, "http://a:1"); s.Failures != 0 || s.InFlight != 0 || s.Picks != 5 {
		t.Fatalf("bodies closed by the caller: %+v; want no failure, nothing in flight, 5 picks", s)
	}
}

// closingBody blocks reads until it is closed; Close returns only after
// the blocked read has returned its error, as the worst interleaving of a
// real body would.
type closingBody struct {
	closed, readDone chan struct{}
	once             sync.Once
}

func newClosingBody() *closingBody {
	return &closingBody{closed: make(chan struct{}), readDone: make(chan struct{})}
}

func (b *closingBody) Read(p []byte) (int, error) {
	<-b.closed
	defer close(b.readDone)
	return 0, errors.New("read on closed body")
}

func (b *closingBody) Close() error {
	b.once.Do(func() { close(b.closed) })
	select {
	case <-b.readDone:
	case <-time.After(time.Second):
	}
	return nil
}

func TestWritesGoToLeader(t *testing.T) {
	c := newFakeCluster(t, 3)
	c.setLeader(2)
	tr, _ := newTestTransport(t, c, WithLeaderPollInterval(20*time.Millisecond))
	waitFor(t, "leader m2", func() bool { return tr.Stats().Leader == c.members[2].srv.URL })
	base := c.members[0].srv.URL
	for i := 0; i < 30; i++ {
		do(t, tr, "PUT", base+"/v2/keys/w")
	}
	do(t, tr, "POST", base+"/v2/keys/dir")
	do(t, tr, "DELETE", base+"/v2/keys/w")
	if w := atomic.LoadInt64(&c.members[2].writes); w != 32 {
		t.Fatalf("leader got %d of 32 writes", w)
	}
	// Reads, quorum reads included, go anywhere.
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 30; i++ {
				do(t, tr, "GET", base+"/v2/keys/r")
				do(t, tr, "GET", base+"/v2/keys/r?quorum=true")
			}
		}()
	}
	wg.Wait()
	for i, m := range c.members {
		if h := atomic.LoadInt64(&m.quorums); h < 30 {
			t.Errorf("member %d served %d quorum reads; they do not spread", i, h)
		}
	}
	// A new leader is followed.
	c.setLeader(0)
	waitFor(t, "leader m0", func() bool { return tr.Stats().Leader == c.members[0].srv.URL })
	before := atomic.LoadInt64(&c.members[0].writes)
	for i := 0; i < 10; i++ {
		do(t, tr, "PUT", base+"/v2/keys/w")
	}
	if w := atomic.LoadInt64(&c.members[0].writes) - before; w != 10 {
		t.Fatalf("new leader got %d of 10 writes", w)
	}
	// No leader: forgotten, writes go anywhere.
	c.setLeader(-1)
	waitFor(t, "no leader", func() bool { return tr.Stats().Leader == "" })
	do(t, tr, "PUT", base+"/v2/keys/w")
}

// Members that advertise other URLs than the endpoints (proxies, load
// balancer names) are matched by member ID.
func TestLeaderByMemberID(t *testing.T) {
	c := newFakeCluster(t, 3)
	c.advertise = func(i int) string { return "http://member-" + string(rune('a'+i)) + ".invalid:2379" }
	c.setLeader(1)
	tr, _ := newTestTransport(t, c, WithLeaderPollInterval(20*time.Millisecond))
	waitFor(t, "leader m1", func() bool { return tr.Stats().Leader == c.members[1].srv.URL })
	c.setLeader(2)
	waitFor(t, "leader m2", func() bool { return tr.Stats().Leader == c.members[2].srv.URL })
	if s := tr.Stats(); s.LeaderPolls == 0 {
		t.Fatalf("stats %+v", s)
	}
}

// Nothing that may have reached a member is sent twice: a write whose
// connection is cut fails, once.
func TestNoRetries(t *testing.T) {
	var hits int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		atomic.AddInt64(&hits, 1)
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close()
	}))
	defer srv.Close()
	srv2 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		atomic.AddInt64(&hits, 1)
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close()
	}))
	defer srv2.Close()
	inner := &http.Transport{}
	defer inner.CloseIdleConnections()
	tr, err := New(inner, []string{srv.URL, srv2.URL}, WithLeaderPollInterval(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	for i, m := range []string{"PUT", "POST", "DELETE", "GET"} {
		req, _ := http.NewRequest(m, srv.URL+"/v2/keys/k", strings.NewReader("value=1"))
		if m == "GET" || m == "DELETE" {
			req, _ = http.NewRequest(m, srv.URL+"/v2/keys/k", nil)
		}
		_, err := tr.RoundTrip(req)
		if err == nil {
			t.Fatalf("%s on a cut connection succeeded", m)
		}
		t.Logf("%s: %v", m, err)
		// net/http itself retries a request on a reused connection that
		// died before anything was written; these are fresh connections,
		// so each request reaches a server exactly once.
		if got := atomic.LoadInt64(&hits); got != int64(i+1) {
			t.Fatalf("%s: %d requests reached the servers, want %d", m, got, i+1)
		}
	}
	if s := tr.Stats(); s.Attempts != s.Requests {
		t.Fatalf("attempts %d for %d requests", s.Attempts, s.Requests)
	}
}

func TestMonotonicGuard(t *testing.T) {
	t.Run("reissue", func(t *testing.T) {
		c := newFakeCluster(t, 3)
		tr, _ := newTestTransport(t, c, WithLeaderPollInterval(-1), WithPickerConfig(picker.Config{Policy: picker.RoundRobin}))
		base := c.members[0].srv.URL
		c.members[2].freeze() // answers reads at 10 from now on
		if _, idx := get(t, tr, base+"/v2/keys/a"); idx != 10 {
			t.Fatalf("index %d", idx)
		}
		do(t, tr, "PUT", base+"/v2/keys/a") // 11
		for i := 0; i < 60; i++ {
			if _, idx := get(t, tr, base+"/v2/keys/a"); idx < 11 {
				t.Fatalf("read %d returned index %d after 11 was seen", i, idx)
			}
		}
		s := tr.Stats()
		if s.StaleAnswers == 0 || s.Reissued != s.StaleAnswers || s.Regressions != 0 || s.QuorumFallbacks != 0 {
			t.Fatalf("stats %+v", s)
		}
		// After staleAfter stale answers in a row the member is avoided:
		// round robin would have sent it a third of the 60 reads.
		if s.StaleAnswers > 10 {
			t.Fatalf("%d stale answers: the lagging member was not avoided", s.StaleAnswers)
		}
		if tags := stats(tr, strings.ToLower(c.members[2].srv.URL)).Tags; tags&tagStale == 0 {
			t.Fatalf("stale member not tagged lagging: %b", tags)
		}
	})
	t.Run("404 too", func(t *testing.T) {
		c := newFakeCluster(t, 2)
		tr, _ := newTestTransport(t, c, WithLeaderPollInterval(-1), WithPickerConfig(picker.Config{Policy: picker.RoundRobin}))
		c.members[1].freeze()
		do(t, tr, "PUT", c.members[0].srv.URL+"/v2/keys/a")
		for i := 0; i < 4; i++ {
			if code, idx := get(t, tr, c.members[0].srv.URL+"/v2/keys/missing"); code != 404 || idx < 11 {
				t.Fatalf("got %d at index %d", code, idx)
			}
		}
	})
	t.Run("quorum fallback", func(t *testing.T) {
		c := newFakeCluster(t, 3)
		c.setLeader(1)
		tr, _ := newTestTransport(t, c, WithLeaderPollInterval(20*time.Millisecond))
		waitFor(t, "leader", func() bool { return tr.Stats().Leader != "" })
		base := c.members[0].srv.URL
		for _, m := range c.members {
			m.freeze()
		}
		do(t, tr, "PUT", base+"/v2/keys/a") // 11; every member still reads 10
		if _, idx := get(t, tr, base+"/v2/keys/a"); idx != 11 {
			t.Fatalf("index %d, want 11 from the quorum read", idx)
		}
		s := tr.Stats()
		if s.StaleAnswers != 3 || s.Reissued != 2 || s.QuorumFallbacks != 1 {
			t.Fatalf("stats %+v: want 3 stale, 2 re-issued, 1 fallback", s)
		}
		if q := atomic.LoadInt64(&c.members[1].quorums); q != 1 {
			t.Fatalf("the leader got %d quorum reads, want 1", q)
		}
	})
	t.Run("many members", func(t *testing.T) {
		// The re-issues of one read never go back to a member already
		// tried, however many members there are (picker.Request.Skip).
		const n, retries = 40, 16
		c := newFakeCluster(t, n)
		tr, _ := newTestTransport(t, c, WithLeaderPollInterval(-1), WithMonotonicRetries(retries))
		for _, m := range c.members {
			m.freeze()
		}
		do(t, tr, "PUT", c.members[0].srv.URL+"/v2/keys/a") // 11; every member still reads 10
		before := make([]int64, n)
		for i, m := range c.members {
			before[i] = atomic.LoadInt64(&m.hits) - atomic.LoadInt64(&m.quorums)
		}
		_, idx := get(t, tr, c.members[0].srv.URL+"/v2/keys/a")
		require.EqualValues(t, 11, idx, "the quorum fallback answers at the latest index")
		tried := 0
		for i, m := range c.members {
			d := atomic.LoadInt64(&m.hits) - atomic.LoadInt64(&m.quorums) - before[i]
			require.LessOrEqual(t, d, int64(1), "member %d was asked the same read %d times", i, d)
			tried += int(d)
		}
		s := tr.Stats()
		assert.Equal(t, retries+1, tried)
		assert.EqualValues(t, retries+1, s.StaleAnswers)
		assert.EqualValues(t, retries, s.Reissued)
		assert.EqualValues(t, 1, s.QuorumFallbacks)
	})
	t.Run("no retries option", func(t *testing.T) {
		c := newFakeCluster(t, 3)
		tr, _ := newTestTransport(t, c, WithLeaderPollInterval(-1), WithMonotonicRetries(0))
		c.members[0].freeze()
		c.members[1].freeze()
		c.members[2].freeze()
		do(t, tr, "PUT", c.members[0].srv.URL+"/v2/keys/a")
		if _, idx := get(t, tr, c.members[0].srv.URL+"/v2/keys/a"); idx != 11 {
			t.Fatalf("index %d", idx)
		}
		if s := tr.Stats(); s.Reissued != 0 || s.QuorumFallbacks != 1 {
			t.Fatalf("stats %+v", s)
		}
	})
	t.Run("off", func(t *testing.T) {
		c := newFakeCluster(t, 3)
		tr, _ := newTestTransport(t, c, WithLeaderPollInterval(-1), WithMonotonicReads(false), WithPickerConfig(picker.Config{Policy: picker.RoundRobin}))
		c.members[2].freeze()
		do(t, tr, "PUT", c.members[0].srv.URL+"/v2/keys/a")
		regressions := 0
		for i := 0; i < 9; i++ {
			if _, idx := get(t, tr, c.members[0].srv.URL+"/v2/keys/a"); idx < 11 {
				regressions++
			}
		}
		if s := tr.Stats(); regressions != 3 || s.Regressions != 3 || s.StaleAnswers != 0 {
			t.Fatalf("%d regressions seen, stats %+v; want 3 of 9 with round robin", regressions, s)
		}
	})
	t.Run("foreign index", func(t *testing.T) {
		// An index from elsewhere (a cluster restored from a backup)
		// must not make every later read pay for the guard.
		c := newFakeCluster(t, 2)
		tr, _ := newTestTransport(t, c, WithLeaderPollInterval(-1))
		tr.raise(1000)
		if _, idx := get(t, tr, c.members[0].srv.URL+"/v2/keys/a"); idx != 10 {
			t.Fatalf("index %d", idx)
		}
		if s := tr.Stats(); s.HighestIndex != 10 || s.QuorumFallbacks != 1 {
			t.Fatalf("stats %+v: the linearizable answer did not reset the highest index", s)
		}
		before := tr.Stats().Attempts
		get(t, tr, c.members[0].srv.URL+"/v2/keys/a")
		if n := tr.Stats().Attempts - before; n != 1 {
			t.Fatalf("%d attempts for a read after the reset", n)
		}
	})
}

func TestCloseIsIdempotent(t *testing.T) {
	c := newFakeCluster(t, 1)
	tr, _ := newTestTransport(t, c, WithLeaderPollInterval(10*time.Millisecond))
	waitFor(t, "a poll", func() bool { return tr.Stats().LeaderPolls > 0 })
	tr.Close()
	tr.Close()
	// Still works, with the leader it knew.
	get(t, tr, c.members[0].srv.URL+"/v2/keys/a")
}

// A member that has just failed is avoided for failedHold, by watches too.
// The engine spreads watches by their count alone, and a member that has
// died has none left, so it looks like the best place for the next watch:
// without the mark, the v2 client's retry of a watch cut by a crash (sent
// at once, through this transport) goes straight back to it.
// TestWatchAcrossRestart in package v2client failed 3 runs of 3 with the
// mark taken off watches ("cluster is unavailable" after every endpoint
// the client tried was rewritten to the dead member).
func TestRecentlyFailedAvoided(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Etcd-Index", "1")
			w.Write([]byte(`{}`))
		}))
		defer live.Close()
		dead := httptest.NewServer(http.NotFoundHandler())
		deadURL := dead.URL
		dead.Close()
		inner := &http.Transport{}
		defer inner.CloseIdleConnections()
		tr, err := New(inner, []string{deadURL, live.URL}, WithLeaderPollInterval(-1))
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		deadKey := strings.ToLower(deadURL)
		failures := 0
		for i := 0; i < 20; i++ {
			req, _ := http.NewRequest("GET", live.URL+"/v2/keys/x?wait=true", nil)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				failures++
				continue
			}
			discard(resp.Body)
		}
		if failures != 1 {
			t.Fatalf("%d of 20 watches went to the dead member, want only the first", failures)
		}
		if s := stats(tr, deadKey); s.Tags&tagFailed == 0 {
			t.Fatalf("dead member not marked: %+v", s)
		}
	})

	// A long poll cut in the middle of its answer (the member crashed
	// while the watch waited) marks the member; after failedHold it gets
	// watches again.
	t.Run("watch cut, then expiry", func(t *testing.T) {
		c := newFakeCluster(t, 2)
		tr, _ := newTestTransport(t, c, WithLeaderPollInterval(-1))
		bad := c.members[0]
		bad.handler.Store(http.HandlerFunc(cutAnswer))
		badKey := strings.ToLower(bad.srv.URL)
		watch := func() error {
			req, _ := http.NewRequest("GET", c.members[1].srv.URL+"/v2/keys/x?wait=true", nil)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			_, err = ioutil.ReadAll(resp.Body)
			return err
		}
		// Watches tie at zero open on both members: the first one that
		// lands on the bad member is cut, and no later one goes there.
		cut := 0
		for i := 0; i < 40; i++ {
			if watch() != nil {
				cut++
			}
		}
		if hits := atomic.LoadInt64(&bad.hits); cut != 1 || hits != 1 {
			t.Fatalf("%d watches cut, %d sent to the bad member; want 1 and 1", cut, hits)
		}
		if s := stats(tr, badKey); s.Tags&tagFailed == 0 || s.Failures != 1 {
			t.Fatalf("a cut watch did not mark its member: %+v", s)
		}
		// The member recovers; once the hold is over it shares watches
		// again.
		bad.handler.Store(http.HandlerFunc(nil))
		time.Sleep(failedHold + 50*time.Millisecond)
		for i := 0; i < 40; i++ {
			if err := watch(); err != nil {
				t.Fatal(err)
			}
		}
		if hits := atomic.LoadInt64(&bad.hits); hits < 2 {
			t.Fatalf("after the hold the recovered member got %d of 40 watches", hits-1)
		}
		if s := stats(tr, badKey); s.Tags&tagFailed != 0 {
			t.Fatalf("mark still set after the hold: %+v", s)
		}
	})
}

// cutAnswer sends headers and the start of a body, then drops the
// connection.
func cutAnswer(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Etcd-Index", "10")
	w.WriteHeader(200)
	w.Write([]byte(`{"action":`))
	w.(http.Flusher).Flush()
	panic(http.ErrAbortHandler)
}

// What sets the "just failed" mark and what ends it early.
func TestDownMark(t *testing.T) {
	c := newFakeCluster(t, 1)
	tr, _ := newTestTransport(t, c, WithLeaderPollInterval(-1))
	m := c.members[0]
	base := m.srv.URL
	down := func() bool { return stats(tr, strings.ToLower(base)).Tags&tagFailed != 0 }

	// A 5xx answer marks; a good answer ends the mark at once. (With one
	// member, avoiding it is moot: it still gets every request.)
	m.handler.Store(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"message":"no leader"}`, http.StatusServiceUnavailable)
	}))
	if resp := do(t, tr, "GET", base+"/v2/keys/a"); resp.StatusCode != 503 || !down() {
		t.Fatalf("a 503 answer (status %d) did not mark the member", resp.StatusCode)
	}
	m.handler.Store(http.HandlerFunc(nil))
	if do(t, tr, "GET", base+"/v2/keys/a"); down() {
		t.Fatal("a good answer did not end the mark")
	}

	// The caller giving up marks nothing, before the headers or in the
	// middle of a watch's wait.
	m.handler.Store(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	for _, q := range []string{"", "?wait=true"} {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		req, _ := http.NewRequest("GET", base+"/v2/keys/a"+q, nil)
		_, err := tr.RoundTrip(req.WithContext(ctx))
		cancel()
		if err == nil {
			t.Fatalf("GET %s: the canceled request succeeded", q)
		}
		if down() {
			t.Fatalf("GET %s: a canceled request marked the member", q)
		}
	}
	if s := stats(tr, strings.ToLower(base)); s.Failures != 1 || s.InFlight != 0 || s.Streams != 0 {
		t.Fatalf("stats %+v: want the 503 as the only failure, nothing open", s)
	}
}
