package etcdbalance_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/etcdbalance/etcdbalance-go/internal/etcdcluster"
)

// TestMembershipChanges: the member set changes at runtime, on the same
// client and connection:
//
//   - a member is added to the cluster and the client syncs its endpoints
//     from the member list (Client.Sync): the new member gets traffic;
//   - a member is taken out of the client's endpoints (SetEndpoints) while
//     it still runs: once the update is in, it gets no traffic at all;
//   - that member is removed from the cluster and the client syncs again:
//     the client's members are the cluster's.
func TestMembershipChanges(t *testing.T) {
	c := startCluster(t, etcdcluster.Config{Size: 3})
	cli := newBalanced(t, clientConfig(c.Endpoints()))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := cli.Put(ctx, "mc", "v"); err != nil {
		t.Fatal(err)
	}
	op := getOp(cli, "mc", mixed)
	wantMembers := func(what string, want []string) {
		t.Helper()
		slices.Sort(want)
		waitFor(t, 30*time.Second, what, func() bool {
			var got []string
			for _, s := range mustStats(t, cli) {
				if s.Ready {
					got = append(got, s.Addr)
				}
			}
			return slices.Equal(got, want)
		})
	}

	// Add a member; the client learns it from the member list.
	added := addMembers(t, c, 1)[0]
	if err := cli.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	wantMembers("the added member in the client's set", c.Endpoints())
	before := added.Proxy().Stats().Streams
	waitFor(t, 30*time.Second, "traffic to the added member", func() bool {
		if r := hammer(ctx, 8, 200, op); r.fail.Load() != 0 {
			t.Fatalf("Gets failed: %v", r)
		}
		return added.Proxy().Stats().Streams > before
	})

	// Take a running member out of the client's endpoints.
	_, out := follower(t, c)
	var keep []string
	for _, ep := range c.Endpoints() {
		if ep != out.ClientAddr() {
			keep = append(keep, ep)
		}
	}
	cli.SetEndpoints(keep...)
	wantMembers("the member gone from the client's set", slices.Clone(keep))
	// Its connection closes with its pickfirst child; nothing can reach it
	// after that.
	waitFor(t, 30*time.Second, "the client's connection to the member to close", func() bool {
		return out.Proxy().Stats().Active == 0
	})
	outBefore := out.Proxy().Stats()
	if r := hammer(ctx, 8, 2000, op); r.fail.Load() != 0 {
		t.Errorf("Gets failed: %v", r)
	}
	if _, err := cli.Put(ctx, "mc", "w"); err != nil {
		t.Error(err)
	}
	if outAfter := out.Proxy().Stats(); outAfter.Streams != outBefore.Streams || outAfter.Accepted != outBefore.Accepted {
		t.Errorf("the removed member got traffic: proxy stats %+v, then %+v", outBefore, outAfter)
	}

	// Remove it from the cluster too; Sync agrees.
	if err := c.RemoveMember(ctx, out); err != nil {
		t.Fatal(err)
	}
	if err := cli.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	wantMembers("the client's set to match the cluster", c.Endpoints())
	if r := hammer(ctx, 8, 500, op); r.fail.Load() != 0 {
		t.Errorf("Gets failed: %v", r)
	}
	t.Logf("final:%s", formatStats(mustStats(t, cli)))
}
