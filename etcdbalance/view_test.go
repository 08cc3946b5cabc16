package etcdbalance

import (
	"errors"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/peer"
)

// statusOf is a Status answer from member id, at term, following leader,
// having applied applied.
func statusOf(id, term, leader, applied uint64) *pb.StatusResponse {
	return &pb.StatusResponse{Header: &pb.ResponseHeader{MemberId: id}, RaftTerm: term, Leader: leader, RaftAppliedIndex: applied}
}

// TestViewApply: how one round's answers become the leader and the lag.
func TestViewApply(t *testing.T) {
	down := errors.New("no answer")
	cases := []struct {
		name    string
		answers map[string]*pb.StatusResponse // nil: the probe failed
		leader  string
		lagging []string
	}{
		{"steady", map[string]*pb.StatusResponse{
			"a": statusOf(1, 2, 1, 100), "b": statusOf(2, 2, 1, 100), "c": statusOf(3, 2, 1, 99),
		}, "a", nil},
		{"deposed leader has not noticed", map[string]*pb.StatusResponse{
			"a": statusOf(1, 2, 1, 100), "b": statusOf(2, 3, 2, 100), "c": statusOf(3, 3, 2, 100),
		}, "b", nil},
		{"new leader did not answer", map[string]*pb.StatusResponse{
			"a": statusOf(1, 2, 1, 100), "b": nil, "c": statusOf(3, 3, 2, 100),
		}, "", nil},
		{"leader did not answer", map[string]*pb.StatusResponse{
			"a": nil, "b": statusOf(2, 2, 1, 100), "c": statusOf(3, 2, 1, 100),
		}, "", nil},
		{"cut-off follower raised its term", map[string]*pb.StatusResponse{
			"a": statusOf(1, 2, 1, 5000), "b": statusOf(2, 2, 1, 5000), "c": statusOf(3, 9, 0, 3000),
		}, "a", []string{"c"}},
		{"election under way", map[string]*pb.StatusResponse{
			"a": statusOf(1, 3, 0, 100), "b": statusOf(2, 3, 0, 100), "c": statusOf(3, 3, 0, 100),
		}, "", nil},
		{"lag exactly at the threshold", map[string]*pb.StatusResponse{
			"a": statusOf(1, 2, 1, 2000), "b": statusOf(2, 2, 1, 1000), "c": statusOf(3, 2, 1, 999),
		}, "a", []string{"c"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := routedPicker(t, defaultRouting())
			v := &view{rt: p.rt, engine: p.engine, members: map[string]*memberState{}}
			var results []probeResult
			for _, a := range []string{"a", "b", "c"} {
				v.members[a] = &memberState{}
				if s := c.answers[a]; s != nil {
					results = append(results, probeResult{addr: a, resp: s})
				} else {
					results = append(results, probeResult{addr: a, err: down})
				}
			}
			v.apply(p.engine.Snapshot(), results)
			if v.leader != c.leader {
				t.Errorf("leader %q, want %q", v.leader, c.leader)
			}
			tags := map[string]bool{}
			for _, s := range p.engine.Snapshot() {
				if s.Tags&tagLeader != 0 {
					tags["leader:"+s.Addr] = true
				}
				if s.Tags&tagLagging != 0 {
					tags["lagging:"+s.Addr] = true
				}
			}
			want := map[string]bool{}
			if c.leader != "" {
				want["leader:"+c.leader] = true
			}
			for _, a := range c.lagging {
				want["lagging:"+a] = true
			}
			if len(tags) != len(want) {
				t.Errorf("tags %v, want %v", tags, want)
			}
			for k := range want {
				if !tags[k] {
					t.Errorf("tags %v, want %v", tags, want)
				}
			}
		})
	}
}

// TestViewLearnsPeers: the view maps the remote address its probes
// reached to the member's address, where the two differ, and forgets the
// mapping with the member.
func TestViewLearnsPeers(t *testing.T) {
	p := routedPicker(t, defaultRouting())
	v := &view{rt: p.rt, engine: p.engine, members: map[string]*memberState{}, peers: map[string]string{}}
	for _, a := range []string{"a", "b", "c"} {
		v.members[a] = &memberState{}
	}
	v.apply(p.engine.Snapshot(), []probeResult{
		{addr: "a", peer: "10.0.0.1:2379", resp: statusOf(1, 2, 1, 100)},
		{addr: "b", peer: "b", resp: statusOf(2, 2, 1, 100)},
		{addr: "c", peer: "10.0.0.3:2379", err: errors.New("no answer")},
	})
	assert.Equal(t, "a", v.memberAt("10.0.0.1:2379"))
	assert.Equal(t, "b", v.memberAt("b"))
	assert.Empty(t, v.memberAt("10.0.0.3:2379"), "a failed probe maps nothing")
	assert.Equal(t, map[string]string{"10.0.0.1:2379": "a"}, v.peers)

	require.NoError(t, p.engine.SetEndpoints([]string{"b", "c", "d"}))
	v.apply(p.engine.Snapshot(), []probeResult{{addr: "b", peer: "b", resp: statusOf(2, 2, 2, 100)}})
	assert.Empty(t, v.memberAt("10.0.0.1:2379"), "the member left")
	assert.Empty(t, v.peers)
}

// TestPeerAddr: grpc's peer address is named as memberAddr names members.
func TestPeerAddr(t *testing.T) {
	for _, c := range []struct {
		addr net.Addr
		want string
	}{
		{nil, ""},
		{&net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 2379}, "10.0.0.1:2379"},
		{&net.TCPAddr{IP: net.IPv6loopback, Port: 2379}, "[::1]:2379"},
		{&net.UnixAddr{Name: "/run/etcd.sock", Net: "unix"}, "unix:///run/etcd.sock"},
		{&net.UnixAddr{Name: "etcd.sock", Net: "unix"}, "unix:etcd.sock"},
	} {
		assert.Equal(t, c.want, peerAddr(&peer.Peer{Addr: c.addr}), "%v", c.addr)
	}
	assert.Equal(t, memberAddr("unix:///run/etcd.sock"), peerAddr(&peer.Peer{Addr: &net.UnixAddr{Name: "/run/etcd.sock", Net: "unix"}}))
}
