package etcdbalance

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

const testdata = "../testdata/etcdbalance"

// TestParseConfigFiles walks testdata/etcdbalance: every good config
// parses to its canonical encoding, every bad one fails with its expected
// message.
func TestParseConfigFiles(t *testing.T) {
	good, err := filepath.Glob(filepath.Join(testdata, "good", "*.json"))
	if err != nil || len(good) == 0 {
		t.Fatalf("no good configs in %s: %v", testdata, err)
	}
	for _, path := range good {
		name := strings.TrimSuffix(filepath.Base(path), ".json")
		t.Run("good/"+name, func(t *testing.T) {
			js := readFile(t, path)
			cfg, err := ParseConfig(json.RawMessage(js))
			if err != nil {
				t.Fatalf("ParseConfig(%s): %v", js, err)
			}
			got := encodeConfig(cfg.Client, cfg.Picker)
			want := strings.TrimSpace(readFile(t, strings.TrimSuffix(path, ".json")+".want"))
			if got != want {
				t.Errorf("canonical encoding\n got %s\nwant %s", got, want)
			}
			again, err := ParseConfig(json.RawMessage(got))
			if err != nil {
				t.Fatalf("ParseConfig of the canonical encoding %s: %v", got, err)
			}
			if !reflect.DeepEqual(*again, *cfg) {
				t.Errorf("round trip changed the config:\n got %+v\nwant %+v", *again, *cfg)
			}
		})
	}

	bad, err := filepath.Glob(filepath.Join(testdata, "bad", "*.json"))
	if err != nil || len(bad) == 0 {
		t.Fatalf("no bad configs in %s: %v", testdata, err)
	}
	for _, path := range bad {
		name := strings.TrimSuffix(filepath.Base(path), ".json")
		t.Run("bad/"+name, func(t *testing.T) {
			js := readFile(t, path)
			want := strings.TrimSpace(readFile(t, strings.TrimSuffix(path, ".json")+".err"))
			cfg, err := ParseConfig(json.RawMessage(js))
			if err == nil {
				t.Fatalf("ParseConfig(%s) = %+v, want an error containing %q", js, cfg, want)
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("ParseConfig(%s) error\n %q\ndoes not contain\n %q", js, err, want)
			}
			if !strings.HasPrefix(err.Error(), "etcdbalance: ") {
				t.Errorf("error %q does not say where it comes from", err)
			}
		})
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestOptionsEncodeAndParse checks that what the options produce is what
// grpc will hand the balancer back.
func TestOptionsEncodeAndParse(t *testing.T) {
	pc, err := applyOptions([]Option{
		WithPolicy(picker.LeastOutstanding),
		WithDecay(3 * time.Second),
		WithSampleWeighting(0.2, -1),
		WithIdleDecay(2*time.Second, -1),
		WithDefaultRTT(5 * time.Millisecond),
		WithSlowStart(-1, 0),
		WithFailurePenalty(time.Second),
		WithEjection(-1, 0, 0),
		WithReshuffle(10*time.Second, 0.5),
		WithReserveRatio(4),
	})
	if err != nil {
		t.Fatal(err)
	}
	sc := serviceConfig("id-1", pc.picker)
	var top struct {
		LoadBalancingConfig []map[string]json.RawMessage `json:"loadBalancingConfig"`
	}
	if err := json.Unmarshal([]byte(sc), &top); err != nil || len(top.LoadBalancingConfig) != 1 {
		t.Fatalf("service config %s: %v", sc, err)
	}
	cfg, err := ParseConfig(top.LoadBalancingConfig[0][Name])
	if err != nil {
		t.Fatalf("ParseConfig(%s): %v", sc, err)
	}
	want := picker.Config{
		Policy: picker.LeastOutstanding, Decay: 3 * time.Second,
		MinSampleWeight: 0.2, PeakStep: -1,
		IdleGrace: 2 * time.Second, IdleDecay: -1, DefaultRTT: 5 * time.Millisecond,
		SlowStart: -1, FailurePenalty: time.Second, EjectAfter: -1,
		ReshuffleInterval: 10 * time.Second, ReshuffleJitter: 0.5, ReserveRatio: 4,
	}
	if cfg.Client != "id-1" || !reflect.DeepEqual(cfg.Picker, want) {
		t.Errorf("parsed back %+v\nwant client id-1 and %+v", *cfg, want)
	}
}

// TestOptionValidation: New reports a bad option before dialling, and a
// client built with DialOptions fails to dial with the same description.
func TestOptionValidation(t *testing.T) {
	cases := []struct {
		name string
		opt  Option
		want string
	}{
		{"policy", WithPolicy("random"), `unknown policy "random"`},
		{"decay", WithDecay(-time.Second), "Decay -1s must be positive"},
		{"idle grace", WithIdleDecay(-time.Second, 0), "IdleGrace -1s must be positive"},
		{"default rtt", WithDefaultRTT(-time.Millisecond), "DefaultRTT -1ms must be positive"},
		{"slow start penalty", WithSlowStart(0, 0.5), "SlowStartPenalty 0.5"},
		{"failure penalty", WithFailurePenalty(-1), "FailurePenalty -1ns must be positive"},
		{"eject max", WithEjection(3, 10*time.Second, time.Second), "EjectMax 1s is shorter than EjectBase 10s"},
		{"jitter", WithReshuffle(time.Second, 1.5), "ReshuffleJitter 1.5"},
		{"reserve NaN", WithReserveRatio(math.NaN()), "NaN"},
		{"reserve small", WithReserveRatio(0.5), "ReserveRatio 0.5"},
		{"peak step", WithSampleWeighting(0, 1), "PeakStep 1"},
		{"sample weight", WithSampleWeighting(1, 0), "MinSampleWeight 1"},
		{"picker config", WithPickerConfig(picker.Config{EjectBase: -time.Second}), "EjectBase -1s must be positive"},
	}
	// Nothing listens here: a valid configuration would dial lazily and
	// fail only on the first call; an invalid one must fail at once.
	cfg := clientv3.Config{Endpoints: []string{"127.0.0.1:1"}, Logger: zap.NewNop(), DialTimeout: time.Second}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := reg.size()
			cli, err := New(cfg, c.opt)
			if err == nil {
				cli.Close()
				t.Fatalf("New accepted the option; want an error containing %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "etcdbalance: ") {
				t.Errorf("New: %q, want an etcdbalance error containing %q", err, c.want)
			}

			dcfg := cfg
			dcfg.DialOptions = DialOptions(c.opt)
			cli, err = clientv3.New(dcfg)
			if err == nil {
				cli.Close()
				t.Fatalf("clientv3.New with DialOptions accepted the option; want an error containing %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "etcdbalance: ") {
				t.Errorf("clientv3.New with DialOptions: %q, want an etcdbalance error containing %q", err, c.want)
			}
			if after := reg.size(); after > before {
				t.Errorf("registry grew from %d to %d entries on a rejected option", before, after)
			}
		})
	}
}
