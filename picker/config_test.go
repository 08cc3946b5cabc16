package picker

import (
	"strings"
	"testing"
	"time"
)

func TestConfigErrorsNameTheBadValue(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Policy: "fastest"}, `"fastest"`},
		{Config{Decay: -time.Second}, "Decay -1s"},
		{Config{IdleGrace: -1}, "IdleGrace -1ns"},
		{Config{DefaultRTT: -time.Millisecond}, "DefaultRTT -1ms"},
		{Config{FailurePenalty: -2 * time.Second}, "FailurePenalty -2s"},
		{Config{EjectBase: time.Minute, EjectMax: time.Second}, "EjectMax 1s"},
		{Config{SlowStartPenalty: 0.5}, "SlowStartPenalty 0.5"},
		{Config{ReshuffleJitter: 1}, "ReshuffleJitter 1"},
		{Config{ReshuffleJitter: -0.1}, "ReshuffleJitter -0.1"},
		{Config{ReserveRatio: 0.5}, "ReserveRatio 0.5"},
		{Config{MinSampleWeight: 1}, "MinSampleWeight 1"},
		{Config{PeakStep: 0.5}, "PeakStep 0.5"},
	} {
		_, err := New(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want an error naming %s", tc.cfg, err, tc.want)
		}
	}
}

func TestConfigDefaultsAndSwitches(t *testing.T) {
	s, err := Config{}.settings()
	if err != nil {
		t.Fatal(err)
	}
	if s.policy != polP2C || s.decay != float64(defaultDecay) || s.reshuffle != int64(defaultReshuffleInterval) ||
		s.ejectAfter != defaultEjectAfter || s.idleDecay != float64(defaultIdleDecay) || s.slowStart != int64(defaultSlowStart) {
		t.Fatalf("defaults not applied: %+v", s)
	}
	s, err = Config{ReshuffleInterval: -1, IdleDecay: -1, SlowStart: -1, EjectAfter: -1}.settings()
	if err != nil {
		t.Fatal(err)
	}
	if s.reshuffle != 0 || s.idleDecay != 0 || s.slowStart != 0 || s.ejectAfter != 0 {
		t.Fatalf("negative values must switch features off: %+v", s)
	}
	s, _ = Config{Policy: Pinned}.settings()
	if s.reshuffle != 0 {
		t.Fatal("pinned must never reshuffle")
	}
}

func TestParsePolicy(t *testing.T) {
	for i, pol := range Policies() {
		got, err := ParsePolicy(string(pol))
		if err != nil || got != pol {
			t.Errorf("ParsePolicy(%q) = %q, %v", pol, got, err)
		}
		p := mustNew(t, Config{Policy: pol}, "a")
		if p.s.policy != policyID(i) {
			t.Errorf("%s: policy in force %d, want %d", pol, p.s.policy, i)
		}
	}
	// The list is the caller's to change.
	Policies()[0] = "changed"
	if Policies()[0] != P2CEWMA {
		t.Error("Policies returned a shared slice")
	}
	if got, err := ParsePolicy(""); err != nil || got != P2CEWMA {
		t.Errorf(`ParsePolicy("") = %q, %v; want the default`, got, err)
	}
}
