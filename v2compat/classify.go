package v2compat

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// class is what a request is, for the choice of member.
type class uint8

const (
	// classOther: members, version, stats, auth…: any member serves it.
	classOther class = iota
	// classRead: GET under /v2/keys, served from the member's own store.
	classRead
	// classQuorumRead: GET with quorum=true, a raft round through the
	// leader, answered by the member that received it.
	classQuorumRead
	// classWatch: GET with wait=true, a long poll for one event.
	classWatch
	// classWrite: PUT, POST, DELETE (and PATCH) under /v2/keys: proposed
	// through the leader.
	classWrite
	// classLeaderRead: the monotonic-read guard's last resort, a quorum
	// read sent to the leader. Never the class of a caller's request.
	classLeaderRead
)

func classify(r *http.Request) class {
	p := r.URL.Path
	if p != "/v2/keys" && !strings.HasPrefix(p, "/v2/keys/") {
		return classOther
	}
	switch r.Method {
	case "", "GET", "HEAD":
		q := r.URL.Query()
		if isTrue(q.Get("wait")) {
			return classWatch
		}
		if isTrue(q.Get("quorum")) {
			return classQuorumRead
		}
		return classRead
	case "PUT", "POST", "DELETE", "PATCH":
		return classWrite
	}
	return classOther
}

// costClass is the engine's latency class of a request of class cl: a recursive GET
// (a List: a whole directory, bound by its size) is judged apart from the
// reads of one key, and writes apart from both, so that one kind does not
// make a member look slow for the others.
func costClass(r *http.Request, cl class) picker.Class {
	switch cl {
	case classWrite:
		return picker.ClassWrite
	case classRead, classQuorumRead:
		if isTrue(r.URL.Query().Get("recursive")) {
			return picker.ClassRange
		}
	}
	return picker.ClassPoint
}

func isTrue(s string) bool {
	b, err := strconv.ParseBool(s)
	return err == nil && b
}

// requestFor is the pick for a class. Writes prefer the leader, which
// saves the hop a follower makes to forward them. Quorum reads do not: their
// raft round costs the same wherever it enters, but the answer (a whole
// directory, for a List) is built by the member that received the request,
// and sending them all to the leader would rebuild the hot spot this
// package removes whenever a client reads with quorum=true, as an
// apiserver with --etcd-quorum-read does. Every kind avoids a member that
// has just failed, and every kind but the "other" requests one that keeps
// answering stale: such a member serves only when no other is eligible
// (picker.Request.Avoid).
func requestFor(cl class) picker.Request {
	switch cl {
	case classWatch:
		return picker.Request{Kind: picker.Stream, Avoid: tagStale | tagFailed}
	case classWrite, classLeaderRead:
		return picker.Request{Prefer: tagLeader, Avoid: tagStale | tagFailed}
	case classRead, classQuorumRead:
		return picker.Request{Avoid: tagStale | tagFailed}
	}
	return picker.Request{Avoid: tagFailed}
}
