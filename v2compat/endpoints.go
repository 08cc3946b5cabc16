package v2compat

import (
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// Tags this package sets on picker endpoints. Bit 0 marks the leader, bit 1
// a member that keeps answering reads behind the highest index seen, bit 2
// a member that has just failed. The other 29 bits give each endpoint an
// identity of its own, so that a re-issued read can exclude the members
// already tried through picker.Request.Exclude without touching any other
// request's view.
const (
	tagLeader  picker.Tags = 1 << 0
	tagLagging picker.Tags = 1 << 1
	tagDown    picker.Tags = 1 << 2
	idShift                = 3
	maxIDBits              = 29
)

// endpoint is one member as this transport knows it. Only the atomic
// fields change once the set holding it is published.
type endpoint struct {
	downUntil   int64 // atomic: end of the "just failed" mark, ns since epoch; 0: none
	staleStreak int32 // atomic: stale answers in a row (monotonic-read guard)

	key    string      // picker address: canonical "scheme://host"
	scheme string      // "http" or "https"
	host   string      // host[:port] as configured; the URL host of rewritten requests
	id     picker.Tags // identity bit; 0 beyond the first maxIDBits endpoints
}

// endpointSet is one immutable endpoint list, swapped whole on updates.
type endpointSet struct {
	list  []*endpoint
	byKey map[string]*endpoint
}

func (s *endpointSet) strings() []string {
	out := make([]string, len(s.list))
	for i, e := range s.list {
		out[i] = e.scheme + "://" + e.host
	}
	return out
}

// match returns the endpoint a request URL names, or nil when its scheme
// and host are not in the set.
func (s *endpointSet) match(u *url.URL) *endpoint {
	if u == nil {
		return nil
	}
	return s.byKey[canonicalKey(strings.ToLower(u.Scheme), u.Host)]
}

// canonicalKey lower-cases the host and drops a default port, so that
// "http://Node1:80" and "http://node1" name the same member.
func canonicalKey(scheme, host string) string {
	h := strings.ToLower(host)
	switch {
	case scheme == "http" && strings.HasSuffix(h, ":80"):
		h = h[:len(h)-3]
	case scheme == "https" && strings.HasSuffix(h, ":443"):
		h = h[:len(h)-4]
	}
	return scheme + "://" + h
}

// parseEndpoint accepts what the v2 client accepts as an endpoint that
// makes sense to balance over: http or https, a host, nothing else.
func parseEndpoint(s string) (*endpoint, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("v2compat: endpoint %q: %v", s, err)
	}
	scheme := strings.ToLower(u.Scheme)
	switch {
	case scheme != "http" && scheme != "https":
		return nil, fmt.Errorf("v2compat: endpoint %q: scheme must be http or https", s)
	case u.Host == "":
		return nil, fmt.Errorf("v2compat: endpoint %q has no host", s)
	case u.User != nil:
		return nil, fmt.Errorf("v2compat: endpoint %q carries user info; give credentials to the v2 client instead", s)
	case (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "":
		return nil, fmt.Errorf("v2compat: endpoint %q must be scheme://host[:port] only", s)
	}
	return &endpoint{key: canonicalKey(scheme, u.Host), scheme: scheme, host: u.Host}, nil
}

// newEndpointSet parses and de-duplicates addrs, keeping the first of
// equal endpoints, and assigns identity bits in list order.
func newEndpointSet(addrs []string) (*endpointSet, error) {
	if len(addrs) == 0 {
		return nil, fmt.Errorf("v2compat: no endpoints")
	}
	s := &endpointSet{byKey: make(map[string]*endpoint, len(addrs))}
	for _, a := range addrs {
		e, err := parseEndpoint(a)
		if err != nil {
			return nil, err
		}
		if s.byKey[e.key] != nil {
			continue
		}
		if n := len(s.list); n < maxIDBits {
			e.id = picker.Tags(1) << uint(idShift+n)
		}
		s.list = append(s.list, e)
		s.byKey[e.key] = e
	}
	if len(s.list) > picker.MaxEndpoints {
		return nil, fmt.Errorf("v2compat: %d endpoints, more than the limit of %d", len(s.list), picker.MaxEndpoints)
	}
	return s, nil
}

func (e *endpoint) resetStreak() {
	if atomic.LoadInt32(&e.staleStreak) != 0 {
		atomic.StoreInt32(&e.staleStreak, 0)
	}
}
