package etcdbalance_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/etcdbalance/etcdbalance-go/etcdbalance"
	"github.com/etcdbalance/etcdbalance-go/internal/etcdcluster"
	"github.com/etcdbalance/etcdbalance-go/internal/faultproxy"
)

// TestUnixEndpoint: one member is reached through a "unix:///path"
// endpoint (a fault proxy on a unix socket in front of it), the others by
// host:port and "http://host:port". Calls are routed over all three, the
// view verifies all three, Stats lists the unix member, and WithMember
// pins a call to it under the spelling the client was given (the answer's
// header names the member that served it). The stock client works with
// the same endpoints.
func TestUnixEndpoint(t *testing.T) {
	c := startCluster(t, etcdcluster.Config{Size: 3})
	ms := c.Members()
	sock := filepath.Join(t.TempDir(), "m0.sock")
	up, err := faultproxy.NewUnix(sock, ms[0].DirectAddr())
	require.NoError(t, err)
	t.Cleanup(func() { _ = up.Close() })
	unixEP := "unix://" + sock // sock is absolute: "unix:///..."
	eps := []string{unixEP, ms[1].ClientAddr(), "http://" + ms[2].ClientAddr()}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	stock := newStock(t, eps, "")
	_, err = stock.Put(ctx, "unix", "v")
	require.NoError(t, err)
	require.Zero(t, hammer(ctx, 4, 100, getOp(stock, "unix", mixed)).fail.Load())

	cli := newBalanced(t, clientConfig(eps))
	_, err = cli.Put(ctx, "unix", "v")
	require.NoError(t, err)
	before := up.Stats().Streams
	r := hammer(ctx, 8, 600, getOp(cli, "unix", mixed))
	assert.Zero(t, r.fail.Load(), "Gets: %v", r)

	// Stats lists the unix member, under whatever spelling, and uses it.
	st, err := etcdbalance.Stats(cli)
	require.NoError(t, err)
	assert.Len(t, st, 3, "Stats:%s", formatStats(st))
	unixKey := ""
	for _, s := range st {
		if strings.Contains(s.Addr, sock) {
			unixKey = s.Addr
			assert.True(t, s.Ready, "unix member not ready:%s", formatStats(st))
		}
	}
	assert.NotEmpty(t, unixKey, "Stats does not list the unix member:%s", formatStats(st))

	// The view probes it like the others.
	waitFor(t, 30*time.Second, "the view to verify every member and find a leader", func() bool {
		v := viewOf(t, cli)
		n := 0
		for _, m := range v.Members {
			if m.Verified {
				n++
			}
		}
		return v.Leader != "" && n == 3
	})
	for _, m := range viewOf(t, cli).Members {
		assert.True(t, m.Verified, "member %s not verified: %s", m.Addr, m.LastError)
	}

	// Pins, by the spelling given to the client.
	for i, ep := range eps {
		resp, err := cli.Get(etcdbalance.WithMember(ctx, ep), "unix", clientv3.WithSerializable())
		if assert.NoError(t, err, "Get pinned to %s", ep) {
			assert.Equal(t, ms[i].ID(), resp.Header.MemberId, "Get pinned to %s answered by another member", ep)
		}
		sresp, err := pb.NewMaintenanceClient(cli.ActiveConnection()).Status(etcdbalance.WithMember(ctx, ep), &pb.StatusRequest{})
		if assert.NoError(t, err, "Status pinned to %s", ep) {
			assert.Equal(t, ms[i].ID(), sresp.Header.MemberId, "Status pinned to %s answered by another member", ep)
		}
	}
	t.Logf("unix member: %d requests at its proxy; Stats:%s", up.Stats().Streams-before, formatStats(st))
	assert.Greater(t, up.Stats().Streams, before, "the unix member got no traffic")
}

// TestWithMemberBadAddress: WithMember with an empty address or one the
// client does not know fails the call at once with InvalidArgument and an
// error naming the bad value: not a silent unpinned call, and not
// Unavailable after clientv3's retries.
func TestWithMemberBadAddress(t *testing.T) {
	c := startCluster(t, etcdcluster.Config{Size: 1})
	cli := newBalanced(t, clientConfig(c.Endpoints()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := cli.Put(ctx, "pin", "v")
	require.NoError(t, err)
	for _, bad := range []string{"", "no-such-member:1"} {
		t.Run(fmt.Sprintf("%q", bad), func(t *testing.T) {
			for _, call := range []struct {
				name string
				do   func(context.Context) error
			}{
				{"Get", func(ctx context.Context) error { _, err := cli.Get(ctx, "pin"); return err }},
				{"Put", func(ctx context.Context) error { _, err := cli.Put(ctx, "pin", "w"); return err }},
			} {
				err := call.do(etcdbalance.WithMember(ctx, bad))
				if !assert.Error(t, err, "%s pinned to %q succeeded", call.name, bad) {
					continue
				}
				assert.Equal(t, codes.InvalidArgument, status.Code(err), "%s pinned to %q: %v", call.name, bad, err)
				if bad == "" {
					assert.True(t, strings.Contains(err.Error(), `""`) || strings.Contains(err.Error(), "empty"),
						"%s: the error does not say the address is empty: %v", call.name, err)
				} else {
					assert.Contains(t, err.Error(), bad, "%s: the error does not name the bad address", call.name)
				}
			}
			assert.NoError(t, ctx.Err(), "the calls used up their deadline")
		})
	}
}
