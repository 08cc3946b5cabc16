package etcdbalance

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/serviceconfig"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// LBConfig is the balancer's parsed configuration: the JSON object under
// the "etcdbalance" key of a service config's loadBalancingConfig, as in
//
//	{"loadBalancingConfig": [{"etcdbalance": {"policy": "p2c-ewma", "decay": "10s"}}]}
//
// Every field is optional; a missing or zero field takes the picker's
// default (see picker.Config). The fields are:
//
//	client             string   registry key minted by New and DialOptions
//	policy             string   "p2c-ewma" (default), "least-outstanding",
//	                            "round-robin", "shuffled-pin", "pinned"
//	decay              duration peak-EWMA time constant (10s)
//	minSampleWeight    number   least weight of a sample below the estimate
//	                            (0.05), or "off"
//	peakStep           number   most one answer can multiply the estimate
//	                            by (4), or "off"
//	idleGrace          duration idle time before an estimate drifts (250ms)
//	idleDecay          duration time constant of that drift (1s), or "off"
//	defaultRTT         duration estimate before anything is measured (30ms)
//	slowStart          duration slow-start window (5s), or "off"
//	slowStartPenalty   number   cost multiplier at slow-start begin (3)
//	failurePenalty     duration least latency charged for a failure (250ms)
//	ejectAfter         integer  consecutive failures that eject (5), or "off"
//	ejectBase          duration first ejection (1s)
//	ejectMax           duration longest ejection (30s)
//	reshuffleInterval  duration reshuffle period (30s), or "off"
//	reshuffleJitter    number   ± fraction of that period (0.2)
//	avoidFactor        number   how much cheaper an avoided member must be (2)
//	reserveRatio       number   how much slower every other member must be
//	                            before a reserve (the leader, for reads)
//	                            serves like any (1.5)
//
// Durations are strings in time.ParseDuration syntax ("250ms", "10s").
// Unknown fields are rejected, so that a misspelt field is not silently
// ignored: this package writes the config itself (New, DialOptions), so
// there is no older or newer writer to stay compatible with.
type LBConfig struct {
	serviceconfig.LoadBalancingConfig `json:"-"`

	// Client is the key of the engine that New or DialOptions registered for
	// one client. Empty, or a key that is not registered (any more), gives
	// the balancer an engine of its own, built from Picker, which does not
	// survive a rebuild of the balancer (grpc's idle mode).
	Client string

	// Picker configures the engine. Clock and Rand are never set from JSON.
	Picker picker.Config
}

// configField is one JSON field of LBConfig.
type configField struct {
	name string
	// parse stores the value v (raw JSON) into c.
	parse func(c *picker.Config, v json.RawMessage) error
	// encode returns the field's JSON value for c, or nil when it is zero
	// (the default) and is to be left out.
	encode func(c *picker.Config) any
}

// off is the JSON spelling of a disabled feature.
const off = "off"

func durationField(name string, allowOff bool, p func(*picker.Config) *time.Duration) configField {
	return configField{
		name: name,
		parse: func(c *picker.Config, v json.RawMessage) error {
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				return fmt.Errorf("want a duration string like \"10s\", got %s", v)
			}
			if s == off {
				if !allowOff {
					return fmt.Errorf("%q is not allowed: %s cannot be switched off", s, name)
				}
				*p(c) = -1
				return nil
			}
			d, err := time.ParseDuration(s)
			if err != nil {
				return fmt.Errorf("bad duration %q (want e.g. \"250ms\" or \"10s\")", s)
			}
			if d < 0 && allowOff {
				return fmt.Errorf("negative duration %q: write \"off\" to switch %s off", s, name)
			}
			*p(c) = d
			return nil
		},
		encode: func(c *picker.Config) any {
			switch d := *p(c); {
			case d == 0:
				return nil
			case d < 0 && allowOff:
				return off
			default:
				return d.String()
			}
		},
	}
}

func floatField(name string, p func(*picker.Config) *float64) configField {
	return floatOffField(name, false, p)
}

// floatOffField is floatField for a number whose feature can be switched
// off with "off" (stored as -1, the picker's spelling).
func floatOffField(name string, allowOff bool, p func(*picker.Config) *float64) configField {
	return configField{
		name: name,
		parse: func(c *picker.Config, v json.RawMessage) error {
			var s string
			if allowOff && json.Unmarshal(v, &s) == nil && s == off {
				*p(c) = -1
				return nil
			}
			var f float64
			if err := json.Unmarshal(v, &f); err != nil {
				if allowOff {
					return fmt.Errorf("want a number or \"off\", got %s", v)
				}
				return fmt.Errorf("want a number, got %s", v)
			}
			if allowOff && f < 0 {
				return fmt.Errorf("negative %s %v: write \"off\" to switch it off", name, f)
			}
			*p(c) = f
			return nil
		},
		encode: func(c *picker.Config) any {
			f := *p(c)
			if f == 0 {
				return nil
			}
			if allowOff && f < 0 {
				return off
			}
			if math.IsNaN(f) || math.IsInf(f, 0) {
				// JSON has no such number; the parser rejects the string
				// with the value in its message.
				return fmt.Sprint(f)
			}
			return f
		},
	}
}

var configFields = []configField{
	{
		name: "policy",
		parse: func(c *picker.Config, v json.RawMessage) error {
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				return fmt.Errorf("want a policy name string, got %s", v)
			}
			if _, err := picker.ParsePolicy(s); err != nil {
				return fmt.Errorf("unknown policy %q (want one of %v)", s, picker.Policies)
			}
			c.Policy = picker.Policy(s) // "" stays the default
			return nil
		},
		encode: func(c *picker.Config) any {
			if c.Policy == "" {
				return nil
			}
			return string(c.Policy)
		},
	},
	durationField("decay", false, func(c *picker.Config) *time.Duration { return &c.Decay }),
	floatOffField("minSampleWeight", true, func(c *picker.Config) *float64 { return &c.MinSampleWeight }),
	floatOffField("peakStep", true, func(c *picker.Config) *float64 { return &c.PeakStep }),
	durationField("idleGrace", false, func(c *picker.Config) *time.Duration { return &c.IdleGrace }),
	durationField("idleDecay", true, func(c *picker.Config) *time.Duration { return &c.IdleDecay }),
	durationField("defaultRTT", false, func(c *picker.Config) *time.Duration { return &c.DefaultRTT }),
	durationField("slowStart", true, func(c *picker.Config) *time.Duration { return &c.SlowStart }),
	floatField("slowStartPenalty", func(c *picker.Config) *float64 { return &c.SlowStartPenalty }),
	durationField("failurePenalty", false, func(c *picker.Config) *time.Duration { return &c.FailurePenalty }),
	{
		name: "ejectAfter",
		parse: func(c *picker.Config, v json.RawMessage) error {
			var s string
			if json.Unmarshal(v, &s) == nil && s == off {
				c.EjectAfter = -1
				return nil
			}
			var n int
			if err := json.Unmarshal(v, &n); err != nil {
				return fmt.Errorf("want a whole number of failures or \"off\", got %s", v)
			}
			if n < 0 {
				return fmt.Errorf("negative count %d: write \"off\" to switch ejection off", n)
			}
			c.EjectAfter = n
			return nil
		},
		encode: func(c *picker.Config) any {
			switch {
			case c.EjectAfter == 0:
				return nil
			case c.EjectAfter < 0:
				return off
			}
			return c.EjectAfter
		},
	},
	durationField("ejectBase", false, func(c *picker.Config) *time.Duration { return &c.EjectBase }),
	durationField("ejectMax", false, func(c *picker.Config) *time.Duration { return &c.EjectMax }),
	durationField("reshuffleInterval", true, func(c *picker.Config) *time.Duration { return &c.ReshuffleInterval }),
	floatField("reshuffleJitter", func(c *picker.Config) *float64 { return &c.ReshuffleJitter }),
	floatField("avoidFactor", func(c *picker.Config) *float64 { return &c.AvoidFactor }),
	floatField("reserveRatio", func(c *picker.Config) *float64 { return &c.ReserveRatio }),
}

// clientField is the registry key; it is not part of picker.Config.
const clientField = "client"

func knownFields() []string {
	names := []string{clientField}
	for _, f := range configFields {
		names = append(names, f.name)
	}
	return names
}

// ParseConfig parses the balancer's JSON configuration (see LBConfig). The
// error names the offending field and value. JSON null and {} give the
// defaults.
func ParseConfig(js json.RawMessage) (*LBConfig, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(js, &raw); err != nil {
		return nil, fmt.Errorf("etcdbalance: config is not a JSON object: %v", err)
	}
	cfg := &LBConfig{}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	slices.Sort(keys) // report the same error every time
	for _, k := range keys {
		v := raw[k]
		if k == clientField {
			if err := json.Unmarshal(v, &cfg.Client); err != nil {
				return nil, fmt.Errorf("etcdbalance: config field %q: want a string, got %s", k, v)
			}
			continue
		}
		i := slices.IndexFunc(configFields, func(f configField) bool { return f.name == k })
		if i < 0 {
			return nil, fmt.Errorf("etcdbalance: unknown config field %q (known fields: %s)", k, strings.Join(knownFields(), ", "))
		}
		if err := configFields[i].parse(&cfg.Picker, v); err != nil {
			return nil, fmt.Errorf("etcdbalance: config field %q: %v", k, err)
		}
	}
	if err := validate(cfg.Picker); err != nil {
		return nil, err
	}
	return cfg, nil
}

// validate checks the engine configuration the one way it is ever checked:
// by building an engine (which starts nothing).
func validate(c picker.Config) error {
	if _, err := picker.New(c); err != nil {
		return fmt.Errorf("etcdbalance: invalid configuration: %v", err)
	}
	return nil
}

// encodeConfig renders the JSON object for client and c; ParseConfig of
// the result gives them back (but for Clock and Rand).
func encodeConfig(client string, c picker.Config) string {
	obj := map[string]any{}
	if client != "" {
		obj[clientField] = client
	}
	for _, f := range configFields {
		if v := f.encode(&c); v != nil {
			obj[f.name] = v
		}
	}
	b, err := json.Marshal(obj)
	if err != nil { // cannot happen: strings, finite numbers and ints only
		panic(fmt.Sprintf("etcdbalance: encoding config: %v", err))
	}
	return string(b)
}

// serviceConfig wraps the balancer config into a whole service config.
func serviceConfig(client string, c picker.Config) string {
	return `{"loadBalancingConfig":[{"` + Name + `":` + encodeConfig(client, c) + `}]}`
}

// Option tunes a client made by New or DialOptions: its engine (the
// options that mirror picker.Config; one left out keeps the picker's
// default) and its cluster-aware routing (WithClusterView and the options
// after it). New reports an invalid option as an error that names the
// field and value; with DialOptions the same error comes from dialling
// (grpc reports it as an invalid default service config). The routing
// options take no invalid values.
type Option func(*options)

// options is what Options set.
type options struct {
	picker  picker.Config
	routing routing
}

// WithPolicy selects the selection rule; default picker.P2CEWMA. The
// others exist for comparison: least-outstanding, round-robin,
// shuffled-pin and pinned.
func WithPolicy(p picker.Policy) Option { return func(o *options) { o.picker.Policy = p } }

// WithDecay sets the peak-EWMA time constant (default 10s; must be > 0).
func WithDecay(d time.Duration) Option { return func(o *options) { o.picker.Decay = d } }

// WithSampleWeighting sets the least weight a latency sample below the
// estimate gets (minWeight, default 0.05) and how many times one answer can
// multiply the estimate (peakStep, default 4); a negative value switches
// either off (picker.Config.MinSampleWeight, picker.Config.PeakStep).
func WithSampleWeighting(minWeight, peakStep float64) Option {
	return func(o *options) { o.picker.MinSampleWeight, o.picker.PeakStep = minWeight, peakStep }
}

// WithIdleDecay sets how long a member may go unsampled before its estimate
// drifts back toward the median of the others (grace, default 250ms), and
// the time constant of that drift (decay, default 1s; negative switches the
// drift off, so a member that was slow once is never tried again).
func WithIdleDecay(grace, decay time.Duration) Option {
	return func(o *options) { o.picker.IdleGrace, o.picker.IdleDecay = grace, decay }
}

// WithDefaultRTT sets the estimate used before any member is measured
// (default 30ms).
func WithDefaultRTT(d time.Duration) Option { return func(o *options) { o.picker.DefaultRTT = d } }

// WithSlowStart sets the window after a member joins or returns during
// which its cost is raised (default 5s; negative switches slow start off),
// and the cost multiplier at the start of the window (default 3; ≥ 1).
func WithSlowStart(window time.Duration, penalty float64) Option {
	return func(o *options) { o.picker.SlowStart, o.picker.SlowStartPenalty = window, penalty }
}

// WithFailurePenalty sets the least latency charged for a failure that
// blames the member (default 250ms), so that fast failures do not look
// fast.
func WithFailurePenalty(d time.Duration) Option {
	return func(o *options) { o.picker.FailurePenalty = d }
}

// WithEjection sets ejection: after consecutive blamed failures (default
// 5; negative switches ejection off) a member is out of rotation for base
// (default 1s), doubling per repeat up to max (default 30s). The picker
// never ejects every member.
func WithEjection(after int, base, max time.Duration) Option {
	return func(o *options) { o.picker.EjectAfter, o.picker.EjectBase, o.picker.EjectMax = after, base, max }
}

// WithReshuffle sets how often the member order is reshuffled (default
// 30s; negative switches reshuffling off) and the ± jitter fraction of
// that period (default 0.2; in [0, 1)).
func WithReshuffle(interval time.Duration, jitter float64) Option {
	return func(o *options) { o.picker.ReshuffleInterval, o.picker.ReshuffleJitter = interval, jitter }
}

// WithReserveRatio sets how much slower every eligible follower must be
// than the leader, by the engine's latency estimate for the call's class,
// before reads go to the leader as to any member (picker.Config.ReserveRatio;
// default picker.DefaultReserveRatio, 1.5; must be ≥ 1). Until then the
// leader, which carries every write and all replication, serves only a
// probe now and then, to keep its estimate fresh. It matters only while
// follower reads are on (WithFollowerReads) and a leader is known
// (WithClusterView).
func WithReserveRatio(r float64) Option { return func(o *options) { o.picker.ReserveRatio = r } }

// WithPickerConfig replaces the whole engine configuration, Clock and Rand
// included (for simulations and tests); options after it still apply. The
// routing options are not touched.
func WithPickerConfig(pc picker.Config) Option { return func(o *options) { o.picker = pc } }

// WithClusterView sets how often the cluster view probes every member with
// Status (default DefaultViewInterval, 1s, spread by ± 20%; 0 keeps the
// default), or switches the view off (negative). Without the view nothing
// knows the leader, the learners or the lag: WithLeaderWrites,
// WithFollowerReads, WithLearnerReads and WithLagThreshold have no effect,
// every call goes to the cheapest connected member (plain load-aware
// spreading), and the monotonic guard re-issues a stale read as a
// linearizable one. Each probe is one Status call on the client's own
// connection (no new connections), which also keeps the connection out of
// grpc's idle mode. A probe that gets no answer within max(interval, 3s)
// counts as failed.
func WithClusterView(interval time.Duration) Option {
	return func(o *options) {
		switch {
		case interval == 0:
			o.routing.viewInterval = DefaultViewInterval
		case interval < 0:
			o.routing.viewInterval = 0
		default:
			o.routing.viewInterval = interval
		}
	}
}

// WithLeaderWrites switches leader routing of writes (Put, DeleteRange,
// Txn, Compact, lease grants and revocations, member, auth and leadership
// changes) on or off; default on. On, a write goes to the leader when the
// view knows it and its connection is up, saving the follower's hop to the
// leader; otherwise, and when off, to the cheapest voting member, which
// forwards it.
func WithLeaderWrites(on bool) Option { return func(o *options) { o.routing.leaderWrites = on } }

// WithFollowerReads switches leader avoidance for reads (Range) on or off;
// default on. On, a read goes to a follower unless every eligible follower
// is slower than the leader by WithReserveRatio, or none is eligible: the
// leader already carries every write and all replication. Off, reads
// are spread over every eligible member, the leader included.
func WithFollowerReads(on bool) Option { return func(o *options) { o.routing.followerReads = on } }

// WithLearnerReads lets learners serve serializable reads when they are
// caught up (not lagging, see WithLagThreshold); default on. Off, learners
// serve nothing but the view's Status probes. Learners never receive
// writes, linearizable reads, streams other than Snapshot or other calls
// that etcd refuses on learners, whatever this option says.
func WithLearnerReads(on bool) Option { return func(o *options) { o.routing.learnerReads = on } }

// WithLagThreshold sets how many raft entries a member's applied index may
// trail the most advanced member's (as of the last probe round) before it
// gets no serializable reads until it catches up: default
// DefaultLagThreshold (1000; 0 keeps the default); negative switches lag
// exclusion off, so that lagging members (learners included) serve
// serializable reads like any other.
func WithLagThreshold(entries int64) Option {
	return func(o *options) {
		switch {
		case entries == 0:
			o.routing.lagThreshold = DefaultLagThreshold
		case entries < 0:
			o.routing.lagThreshold = 0
		default:
			o.routing.lagThreshold = uint64(entries)
		}
	}
}

// WithMonotonicReads switches the monotonic-read guard on or off; default
// on. On, the client never gets a KV answer whose revision is lower than
// one it had observed when the call started (see "Consistency" in the
// package doc for how, and what it costs). Off, a serializable read may be
// answered by a member that has not applied what an earlier answer showed.
func WithMonotonicReads(on bool) Option { return func(o *options) { o.routing.monotonic = on } }

// applyOptions folds opts into the defaults and validates them.
func applyOptions(opts []Option) (options, error) {
	o := options{routing: defaultRouting()}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if err := checkHedge(o.routing.hedge); err != nil {
		return o, err
	}
	return o, validate(o.picker)
}
