package etcdbalance_test

import (
	"context"
	"fmt"
	"log"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbalance/etcdbalance-go/etcdbalance"
	"github.com/etcdbalance/etcdbalance-go/picker"
)

// New is a drop-in for clientv3.New: the client it returns is a plain
// *clientv3.Client whose every call goes to the member that is cheapest
// now, and Stats shows the engine's view of each member. (Nothing listens
// on these addresses, so no member is ready; the tests module runs the
// same against a real cluster.)
func Example() {
	cli, err := etcdbalance.New(clientv3.Config{
		Endpoints:   []string{"127.0.0.1:1", "https://127.0.0.1:2"},
		DialTimeout: time.Second,
	}, etcdbalance.WithClusterView(-1))
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()

	stats, err := etcdbalance.Stats(cli)
	if err != nil {
		log.Fatal(err)
	}
	for _, s := range stats {
		fmt.Printf("%s ready=%v picks=%d\n", s.Addr, s.Ready, s.Picks)
	}
	// Output:
	// 127.0.0.1:1 ready=false picks=0
	// 127.0.0.1:2 ready=false picks=0
}

// Code that builds its own clientv3.Config appends DialOptions.
// WithPickerConfig tunes the engine; fields left zero keep picker's
// defaults.
func ExampleDialOptions() {
	cfg := clientv3.Config{
		Endpoints:   []string{"10.0.0.1:2379", "10.0.0.2:2379", "10.0.0.3:2379"},
		DialTimeout: 5 * time.Second,
	}
	cfg.DialOptions = append(cfg.DialOptions, etcdbalance.DialOptions(
		etcdbalance.WithPickerConfig(picker.Config{EjectAfter: 3, EjectMax: 10 * time.Second}),
	)...)
	cli, err := clientv3.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
}

// WithMember sends one call to a given member, for per-member checks on the
// client's own connections.
func ExampleWithMember() {
	var cli *clientv3.Client // made by etcdbalance.New
	ctx := etcdbalance.WithMember(context.Background(), "10.0.0.2:2379")
	if _, err := cli.Get(ctx, "key", clientv3.WithSerializable()); err != nil {
		log.Print(err)
	}
}

// Attach starts the cluster view of a client built with DialOptions, so
// that it routes as one made by New: writes to the leader, reads to the
// followers, learners and lagging members kept safe.
func ExampleAttach() {
	cfg := clientv3.Config{
		Endpoints:   []string{"10.0.0.1:2379", "10.0.0.2:2379", "10.0.0.3:2379"},
		DialTimeout: 5 * time.Second,
	}
	cfg.DialOptions = append(cfg.DialOptions, etcdbalance.DialOptions()...)
	cli, err := clientv3.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	stop, err := etcdbalance.Attach(cli)
	if err != nil {
		log.Fatal(err)
	}
	defer stop() // or let cli.Close end it

	view, err := etcdbalance.ClusterView(cli)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("leader %s after %d probe rounds", view.Leader, view.Rounds)
}

// The cluster-aware rules can be tuned or switched off one by one.
func ExampleNew_options() {
	cli, err := etcdbalance.New(clientv3.Config{Endpoints: []string{"10.0.0.1:2379", "10.0.0.2:2379", "10.0.0.3:2379"}},
		etcdbalance.WithClusterView(500*time.Millisecond), // probe twice a second
		etcdbalance.WithLagThreshold(5000),                // tolerate more lag
		etcdbalance.WithFollowerReads(false),              // let the leader take reads too
		etcdbalance.WithLearnerReads(false),               // learners serve nothing
		etcdbalance.WithMonotonicReads(false),             // no guard: stale reads may go back
	)
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
}

// WithLeader and WithAnyMember override the rules for one call.
func ExampleWithLeader() {
	var cli *clientv3.Client // made by etcdbalance.New
	// The leader's own answer, without a follower's ReadIndex round trip.
	if _, err := cli.Get(etcdbalance.WithLeader(context.Background()), "key"); err != nil {
		log.Print(err)
	}
	// A plain load-aware choice, leader included.
	if _, err := cli.Get(etcdbalance.WithAnyMember(context.Background()), "key", clientv3.WithSerializable()); err != nil {
		log.Print(err)
	}
}
