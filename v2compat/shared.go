package v2compat

import (
	"sort"
	"strings"
	"sync"
)

// shared holds the Transports handed out by Shared, by key.
var shared = struct {
	mu sync.Mutex
	m  map[string]*sharedEntry
}{m: make(map[string]*sharedEntry)}

type sharedEntry struct {
	t    *Transport
	refs int
}

// Shared returns the one Transport of this process for endpoints (in any
// order) and tlsFiles (the certificate, key and CA files the inner
// transport is built from, or anything else that tells inner transports
// apart), and a function that releases it.
//
// An apiserver builds one storage client per resource, 40 to 50 of them.
// With a Transport each, the leader would be polled 40 to 50 times per
// interval and requests in flight would be counted per resource, so that a
// member busy with one resource's requests would look idle to the others.
// Shared gives them one Transport, and so one engine and one leader poll.
//
// The first call for a key builds the Transport, with New(newInner(),
// endpoints, opts...); later calls return it and ignore newInner and opts.
// Call release once when done with it (it is an apiserver DestroyFunc); the
// last release closes the Transport and its inner transport's idle
// connections, and the next call builds a new one. Do not call SetEndpoints
// on a shared Transport: it would change the endpoints of every user.
func Shared(endpoints, tlsFiles []string, newInner func() (CancelableTransport, error), opts ...Option) (tr *Transport, release func(), err error) {
	set, err := newEndpointSet(endpoints)
	if err != nil {
		return nil, nil, err
	}
	key := sharedKey(set, tlsFiles)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	e := shared.m[key]
	if e == nil {
		inner, err := newInner()
		if err != nil {
			return nil, nil, err
		}
		t, err := New(inner, endpoints, opts...)
		if err != nil {
			return nil, nil, err
		}
		e = &sharedEntry{t: t}
		shared.m[key] = e
	}
	e.refs++
	var once sync.Once
	return e.t, func() { once.Do(func() { releaseShared(key, e) }) }, nil
}

func releaseShared(key string, e *sharedEntry) {
	shared.mu.Lock()
	e.refs--
	last := e.refs == 0
	if last {
		delete(shared.m, key)
	}
	shared.mu.Unlock()
	if last {
		// Outside the lock: Close waits for a leader lookup in progress.
		e.t.Close()
		e.t.CloseIdleConnections()
	}
}

// sharedKey is the canonical endpoint keys, sorted, then the TLS files.
func sharedKey(set *endpointSet, tlsFiles []string) string {
	keys := make([]string, len(set.list))
	for i, e := range set.list {
		keys[i] = e.key
	}
	sort.Strings(keys)
	return strings.Join(keys, " ") + "\x00" + strings.Join(tlsFiles, "\x00")
}
