package etcdbalance

import (
	"errors"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
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
