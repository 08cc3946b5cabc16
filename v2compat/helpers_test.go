package v2compat

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// fakeCluster is a set of httptest servers that answer the parts of the
// etcd v2 API the transport cares about: keys (with X-Etcd-Index), the
// leader and stats/self. Each member has its own store index, which a test
// can hold back to make it stale.
type fakeCluster struct {
	t       *testing.T
	mu      sync.Mutex
	index   uint64 // the cluster's committed index
	leader  int    // -1: no leader
	members []*fakeMember
	// advertise: if set, the leader's clientURLs are this instead of its
	// real URL (members behind proxies or other names).
	advertise func(i int) string
}

type fakeMember struct {
	c      *fakeCluster
	i      int
	srv    *httptest.Server
	id     string
	stale  int32 // atomic: 1 while the member answers reads at a frozen index
	frozen uint64

	hits    int64 // atomic: requests under /v2/keys
	writes  int64 // atomic: PUT/POST/DELETE under /v2/keys
	quorums int64 // atomic: GETs with quorum=true

	// handler, if set, replaces the keys handler.
	handler atomic.Value // http.HandlerFunc
}

func newFakeCluster(t *testing.T, n int) *fakeCluster {
	t.Helper()
	c := &fakeCluster{t: t, index: 10, leader: 0}
	for i := 0; i < n; i++ {
		m := &fakeMember{c: c, i: i, id: fmt.Sprintf("%016x", 0xabc0+i)}
		m.srv = httptest.NewServer(http.HandlerFunc(m.serve))
		c.members = append(c.members, m)
	}
	t.Cleanup(c.close)
	return c
}

func (c *fakeCluster) close() {
	for _, m := range c.members {
		m.srv.CloseClientConnections()
		m.srv.Close()
	}
}

func (c *fakeCluster) urls() []string {
	out := make([]string, len(c.members))
	for i, m := range c.members {
		out[i] = m.srv.URL
	}
	return out
}

func (c *fakeCluster) setLeader(i int) {
	c.mu.Lock()
	c.leader = i
	c.mu.Unlock()
}

// freeze makes member i answer reads at the current index from now on.
func (m *fakeMember) freeze() {
	m.c.mu.Lock()
	m.frozen = m.c.index
	m.c.mu.Unlock()
	atomic.StoreInt32(&m.stale, 1)
}

func (m *fakeMember) serve(w http.ResponseWriter, r *http.Request) {
	c := m.c
	switch r.URL.Path {
	case "/v2/members/leader":
		c.mu.Lock()
		l := c.leader
		c.mu.Unlock()
		if l < 0 {
			http.Error(w, `{"message":"During election"}`, http.StatusServiceUnavailable)
			return
		}
		u := c.members[l].srv.URL
		if c.advertise != nil {
			u = c.advertise(l)
		}
		_ = json.NewEncoder(w).Encode(map[string]interface{}{
			"id": c.members[l].id, "name": "m" + strconv.Itoa(l), "clientURLs": []string{u},
		})
		return
	case "/v2/stats/self":
		_ = json.NewEncoder(w).Encode(map[string]interface{}{"id": m.id, "name": "m" + strconv.Itoa(m.i)})
		return
	case "/version":
		_, _ = w.Write([]byte(`{"etcdserver":"3.5.0","etcdcluster":"3.5.0"}`))
		return
	}
	atomic.AddInt64(&m.hits, 1)
	if h, ok := m.handler.Load().(http.HandlerFunc); ok && h != nil {
		h(w, r)
		return
	}
	c.mu.Lock()
	idx := c.index
	switch r.Method {
	case "PUT", "POST", "DELETE":
		atomic.AddInt64(&m.writes, 1)
		c.index++
		idx = c.index
	default:
		if r.URL.Query().Get("quorum") == "true" {
			atomic.AddInt64(&m.quorums, 1)
		} else if atomic.LoadInt32(&m.stale) == 1 {
			idx = m.frozen
		}
	}
	c.mu.Unlock()
	w.Header().Set("X-Etcd-Index", strconv.FormatUint(idx, 10))
	w.Header().Set("Content-Type", "application/json")
	if r.URL.Path == "/v2/keys/missing" {
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"errorCode":100,"message":"Key not found","cause":"/missing","index":%d}`, idx)
		return
	}
	fmt.Fprintf(w, `{"action":"get","node":{"key":%q,"value":"v","modifiedIndex":%d,"createdIndex":%d}}`, r.URL.Path, idx, idx)
}

// newTestTransport builds a Transport over c with an *http.Transport and
// closes both at the end of the test.
func newTestTransport(t *testing.T, c *fakeCluster, opts ...Option) (*Transport, *http.Transport) {
	t.Helper()
	inner := &http.Transport{MaxIdleConnsPerHost: 64}
	tr, err := New(inner, c.urls(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		tr.Close()
		inner.CloseIdleConnections()
	})
	return tr, inner
}

// get sends one GET through rt and returns the status and X-Etcd-Index.
func get(t *testing.T, rt http.RoundTripper, url string) (int, uint64) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	discard(resp.Body)
	idx, _ := strconv.ParseUint(resp.Header.Get("X-Etcd-Index"), 10, 64)
	return resp.StatusCode, idx
}

// do sends one request through rt and drains the answer.
func do(t *testing.T, rt http.RoundTripper, method, url string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	discard(resp.Body)
	return resp
}

// waitFor polls cond until it holds or 5 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stats returns the picker's stats of the endpoint with key k.
func stats(tr *Transport, k string) picker.EndpointStats {
	for _, s := range tr.Stats().Members {
		if s.Addr == k {
			return s
		}
	}
	return picker.EndpointStats{}
}

// recordingTransport is a CancelableTransport that records what it is
// given and answers from a function.
type recordingTransport struct {
	mu       sync.Mutex
	reqs     []*http.Request
	canceled []*http.Request
	answer   func(r *http.Request) (*http.Response, error)
}

func (rt *recordingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rt.mu.Lock()
	rt.reqs = append(rt.reqs, r)
	rt.mu.Unlock()
	return rt.answer(r)
}

func (rt *recordingTransport) CancelRequest(r *http.Request) {
	rt.mu.Lock()
	rt.canceled = append(rt.canceled, r)
	rt.mu.Unlock()
}

func (rt *recordingTransport) requests() []*http.Request {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return append([]*http.Request(nil), rt.reqs...)
}
