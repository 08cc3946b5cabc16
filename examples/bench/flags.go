package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/etcdbalance/etcdbalance-go/etcdbalance"
	"github.com/etcdbalance/etcdbalance-go/picker"
)

// options are the parsed and checked command-line flags.
type options struct {
	scenario    *scenario
	policies    []*policy
	members     int
	clients     int
	duration    time.Duration // per policy, measured part only
	warmup      time.Duration // per policy, before measuring
	concurrency int           // requests in flight per client
	seed        int64
	keys        int      // keys under the List prefix
	endpoints   []string // external v3 cluster: host:port
	v2Endpoints []string // external v2 cluster: http://host:port
	jsonPath    string
	plotsDir    string
}

// Limits of the flags. The members limit is etcdcluster's and
// v2cluster's.
const (
	maxMembers     = 9
	maxClients     = 64
	maxConcurrency = 1024
	minDuration    = 500 * time.Millisecond
	maxKeys        = 100000
	maxRate        = 1e6
)

// errHelp reports that -h was given: usage was printed, nothing to run.
var errHelp = errors.New("help requested")

// errPrinted reports a flag syntax error that the flag package has
// already printed, naming the flag and the value, with the usage.
var errPrinted = errors.New("bad flags (printed above)")

// parseFlags parses args. Every error names the offending value.
func parseFlags(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		scenarioName = fs.String("scenario", "incident", "scenario: "+strings.Join(scenarioNames(), ", "))
		policyList   = fs.String("policies", "all", "comma-separated policies, or all: "+strings.Join(policyNames(), ", "))
		members      = fs.Int("members", 5, "members of the in-process clusters (1-9); with -endpoints, the endpoint count")
		clients      = fs.Int("clients", 3, "clients, each standing for one apiserver")
		duration     = fs.Duration("duration", 15*time.Second, "measured time per policy (after a warm-up)")
		warmup       = fs.Duration("warmup", time.Second, "unmeasured time per policy before measuring")
		concurrency  = fs.Int("concurrency", 16, "requests in flight per client (closed-loop workers)")
		seed         = fs.Int64("seed", 1, "seed of the request mix and key choice")
		keys         = fs.Int("keys", 2000, "keys of ~1 KiB under the listed prefix")
		rateFlag     = fs.Float64("rate", 0, "offered requests per second over all clients; 0 keeps the scenario's (overhead: full speed)")
		endpoints    = fs.String("endpoints", "", "comma-separated client endpoints (host:port) of an external v3 cluster instead of the in-process one; faults that need the proxies are skipped")
		v2Endpoints  = fs.String("v2-endpoints", "", "comma-separated endpoints (http://host:port) of an external cluster serving the v2 API, for the v2 rows")
		jsonPath     = fs.String("json", "", "write the results as JSON to `FILE`")
		plotsDir     = fs.String("plots", "", "write SVG charts into `DIR`")
		// For diagnosis: they change what the etcdbalance rows measure.
		reserveRatio  = fs.Float64("reserve-ratio", 0, "etcdbalance rows: picker.Config.ReserveRatio `R` (R >= 1); 0 keeps the engine's default")
		followerReads = fs.Bool("follower-reads", true, "etcdbalance rows: WithFollowerReads; false spreads reads over the leader too")
	)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: go run ./examples/bench [flags]\n\nRuns one scenario against every policy and prints one row per policy.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, errHelp
		}
		// The flag package has printed the problem, naming the value, and
		// the usage.
		return nil, errPrinted
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (flags only)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	o := &options{
		members:     *members,
		clients:     *clients,
		duration:    *duration,
		warmup:      *warmup,
		concurrency: *concurrency,
		seed:        *seed,
		keys:        *keys,
		jsonPath:    *jsonPath,
		plotsDir:    *plotsDir,
	}
	var err error
	if o.scenario, err = lookupScenario(*scenarioName); err != nil {
		return nil, err
	}
	if *rateFlag < 0 || *rateFlag > maxRate {
		return nil, fmt.Errorf("-rate %v out of range 0..%v", *rateFlag, maxRate)
	}
	if *rateFlag > 0 {
		sc := *o.scenario // the table is shared: change a copy
		sc.rate = *rateFlag
		o.scenario = &sc
	}
	if o.policies, err = parsePolicies(*policyList, o.scenario); err != nil {
		return nil, err
	}
	if *reserveRatio != 0 && !(*reserveRatio >= 1 && *reserveRatio <= 1e6) {
		return nil, fmt.Errorf("-reserve-ratio %v: want 0 (default) or a ratio >= 1", *reserveRatio)
	}
	for _, p := range o.policies {
		if !p.eb {
			continue
		}
		if *reserveRatio != 0 {
			p.ebOpts = append(p.ebOpts, etcdbalance.WithPickerConfig(picker.Config{ReserveRatio: *reserveRatio}))
			p.about += fmt.Sprintf("; -reserve-ratio %v", *reserveRatio)
		}
		if !*followerReads {
			p.ebOpts = append(p.ebOpts, etcdbalance.WithFollowerReads(false))
			p.about += "; -follower-reads=false"
		}
	}
	if *endpoints != "" {
		if o.endpoints, err = parseEndpoints("-endpoints", *endpoints, false); err != nil {
			return nil, err
		}
		if set["members"] && *members != len(o.endpoints) {
			return nil, fmt.Errorf("-members %d does not match the %d endpoints of -endpoints %q", *members, len(o.endpoints), *endpoints)
		}
		o.members = len(o.endpoints)
	}
	if *v2Endpoints != "" {
		if o.v2Endpoints, err = parseEndpoints("-v2-endpoints", *v2Endpoints, true); err != nil {
			return nil, err
		}
	}
	switch {
	case o.members < 1 || o.members > maxMembers:
		return nil, fmt.Errorf("-members %d out of range 1..%d", o.members, maxMembers)
	case o.clients < 1 || o.clients > maxClients:
		return nil, fmt.Errorf("-clients %d out of range 1..%d", o.clients, maxClients)
	case o.duration < minDuration:
		return nil, fmt.Errorf("-duration %v too short (at least %v)", o.duration, minDuration)
	case o.warmup < 0:
		return nil, fmt.Errorf("-warmup %v is negative", o.warmup)
	case o.concurrency < 1 || o.concurrency > maxConcurrency:
		return nil, fmt.Errorf("-concurrency %d out of range 1..%d", o.concurrency, maxConcurrency)
	case o.keys < 1 || o.keys > maxKeys:
		return nil, fmt.Errorf("-keys %d out of range 1..%d", o.keys, maxKeys)
	}
	if o.jsonPath != "" && o.jsonPath == o.plotsDir {
		return nil, fmt.Errorf("-json %q and -plots %q name the same path", o.jsonPath, o.plotsDir)
	}
	// Found out now rather than after minutes of measuring.
	if o.jsonPath != "" {
		if fi, err := os.Stat(filepath.Dir(o.jsonPath)); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("-json %q: no directory %q to write it in", o.jsonPath, filepath.Dir(o.jsonPath))
		}
		if fi, err := os.Stat(o.jsonPath); err == nil && fi.IsDir() {
			return nil, fmt.Errorf("-json %q is a directory", o.jsonPath)
		}
	}
	if o.plotsDir != "" {
		if fi, err := os.Stat(o.plotsDir); err == nil && !fi.IsDir() {
			return nil, fmt.Errorf("-plots %q is a file, not a directory", o.plotsDir)
		}
	}
	return o, nil
}

// runsIn reports whether p can run sc: the job-storm operations need
// clientv3 in this process.
func (p *policy) runsIn(sc *scenario) bool { return !sc.storm || p.newV3 != nil }

// parsePolicies resolves a comma-separated list of policy names, or "all"
// (every policy that can run sc and is not kept for another scenario).
func parsePolicies(s string, sc *scenario) ([]*policy, error) {
	if strings.TrimSpace(s) == "all" {
		var out []*policy
		for _, p := range allPolicies() {
			if p.runsIn(sc) && (p.only == "" || p.only == sc.name) {
				out = append(out, p)
			}
		}
		return out, nil
	}
	var out []*policy
	seen := map[string]bool{}
	for name := range strings.SplitSeq(s, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		p := lookupPolicy(name)
		if p == nil {
			return nil, fmt.Errorf("-policies: unknown policy %q (want all or some of %s)", name, strings.Join(policyNames(), ", "))
		}
		if !p.runsIn(sc) {
			return nil, fmt.Errorf("-policies: policy %q cannot run scenario %s (it needs clientv3 for Txn and leases)", name, sc.name)
		}
		if seen[name] {
			return nil, fmt.Errorf("-policies: policy %q given twice", name)
		}
		seen[name] = true
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("-policies %q names no policy", s)
	}
	return out, nil
}

// parseEndpoints checks a comma-separated endpoint list. v3 endpoints are
// returned as host:port; v2 ones (withScheme) as http://host:port.
func parseEndpoints(flagName, s string, withScheme bool) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for ep := range strings.SplitSeq(s, ",") {
		ep = strings.TrimSpace(ep)
		if ep == "" {
			continue
		}
		hostPort := ep
		if strings.Contains(ep, "://") {
			u, err := url.Parse(ep)
			if err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") {
				return nil, fmt.Errorf("%s: bad endpoint %q (want host:port or http://host:port)", flagName, ep)
			}
			if u.Scheme != "http" {
				return nil, fmt.Errorf("%s: endpoint %q: only plain http is supported, not %q", flagName, ep, u.Scheme)
			}
			hostPort = u.Host
		}
		host, port, err := net.SplitHostPort(hostPort)
		if err != nil || host == "" || port == "" {
			return nil, fmt.Errorf("%s: bad endpoint %q (want host:port or http://host:port)", flagName, ep)
		}
		if seen[hostPort] {
			return nil, fmt.Errorf("%s: endpoint %q given twice", flagName, ep)
		}
		seen[hostPort] = true
		if withScheme {
			out = append(out, "http://"+hostPort)
		} else {
			out = append(out, hostPort)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s %q names no endpoint", flagName, s)
	}
	if len(out) > maxMembers {
		return nil, fmt.Errorf("%s: %d endpoints, at most %d", flagName, len(out), maxMembers)
	}
	return out, nil
}
