package v2compat

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// Tags this package sets on picker endpoints, each with one meaning.
const (
	// tagLeader: the member the last leader lookup found.
	tagLeader picker.Tags = 1 << 0
	// tagStale: the member answered staleAfter reads in a row below the
	// highest index seen (the monotonic-read guard); a picker.Mark that
	// lasts staleHold, or until it answers a read that is not stale.
	tagStale picker.Tags = 1 << 1
	// tagFailed: a request to the member has just failed; a picker.Mark
	// that lasts failedHold, or until it answers well.
	tagFailed picker.Tags = 1 << 2
)

// endpoint is one member as this transport knows it. Only the atomic
// fields change once the set holding it is published.
type endpoint struct {
	staleStreak int32 // atomic: stale answers in a row (monotonic-read guard)
	failed      int32 // atomic: 1 while a tagFailed mark may be on

	key    string // picker address: canonical "scheme://host"
	scheme string // "http" or "https"
	host   string // host[:port] as configured; the URL host of rewritten requests
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
// equal endpoints.
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
		s.list = append(s.list, e)
		s.byKey[e.key] = e
	}
	if len(s.list) > picker.MaxEndpoints {
		return nil, fmt.Errorf("v2compat: %d endpoints, more than the limit of %d", len(s.list), picker.MaxEndpoints)
	}
	return s, nil
}
