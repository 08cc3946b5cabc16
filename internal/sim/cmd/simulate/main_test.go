package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestBadFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // must appear in the error output
	}{
		{"unknown scenario", []string{"-scenario", "meltdown"}, `"meltdown"`},
		{"missing scenario", nil, "-scenario is required"},
		{"bad seed", []string{"-scenario", "homogeneous", "-seed", "x1"}, `"x1"`},
		{"negative seed", []string{"-scenario", "homogeneous", "-seed", "-3"}, `"-3"`},
		{"unknown policy", []string{"-scenario", "homogeneous", "-policy", "p2c-ewma,fastest"}, `"fastest"`},
		{"empty policy", []string{"-scenario", "homogeneous", "-policy", "p2c-ewma,"}, `""`},
		{"bad eject-after", []string{"-scenario", "homogeneous", "-eject-after", "-7"}, "-7"},
		{"unknown flag", []string{"-scenario", "homogeneous", "-speed", "9"}, "-speed"},
		{"unknown estimates", []string{"-scenario", "lists", "-estimates", "guess"}, `"guess"`},
		{"unknown leader rule", []string{"-scenario", "lists", "-leader", "king"}, `"king"`},
		{"bad reserve ratio", []string{"-scenario", "lists", "-reserve-ratio", "0.5"}, "ReserveRatio 0.5"},
		{"stray argument", []string{"-scenario", "homogeneous", "extra"}, `"extra"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := run(tt.args, &out, &errOut); code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			if !strings.Contains(errOut.String(), tt.want) {
				t.Errorf("stderr %q does not name %s", errOut.String(), tt.want)
			}
			if out.Len() != 0 {
				t.Errorf("stdout not empty: %q", out.String())
			}
		})
	}
}

func TestJSON(t *testing.T) {
	args := []string{"-scenario", "incident", "-seed", "3", "-json", "-policy", "p2c-ewma,pinned"}
	var out, errOut bytes.Buffer
	if code := run(args, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	dec := json.NewDecoder(bytes.NewReader(out.Bytes()))
	var rep struct {
		Scenario string `json:"scenario"`
		Seed     uint64 `json:"seed"`
		Results  []map[string]json.RawMessage
	}
	if err := dec.Decode(&rep); err != nil {
		t.Fatal(err)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		t.Fatalf("more than one JSON value on stdout (%v)", err)
	}
	if rep.Scenario != "incident" || rep.Seed != 3 || len(rep.Results) != 2 {
		t.Fatalf("got scenario %q seed %d with %d results", rep.Scenario, rep.Seed, len(rep.Results))
	}
	for _, r := range rep.Results {
		for _, key := range []string{"policy", "requests", "errors", "lost", "latency_ms", "member_share", "max_over_mean_share"} {
			if _, ok := r[key]; !ok {
				t.Errorf("result lacks %q", key)
			}
		}
		var lat map[string]float64
		if err := json.Unmarshal(r["latency_ms"], &lat); err != nil {
			t.Fatal(err)
		}
		for _, key := range []string{"p50", "p90", "p99", "p999"} {
			if lat[key] <= 0 {
				t.Errorf("latency_ms.%s = %v", key, lat[key])
			}
		}
		var shares []float64
		if err := json.Unmarshal(r["member_share"], &shares); err != nil || len(shares) != 5 {
			t.Errorf("member_share %s: %v", r["member_share"], err)
		}
		if string(r["lost"]) != "0" {
			t.Errorf("lost = %s", r["lost"])
		}
	}

	// Same seed, same bytes.
	var again bytes.Buffer
	if code := run(args, &again, io.Discard); code != 0 || !bytes.Equal(out.Bytes(), again.Bytes()) {
		t.Errorf("second run differs (exit %d)", code)
	}
}

func TestTable(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"-scenario", "recovery", "-policy", "p2c-ewma"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{"scenario recovery, seed 1", "fault: member 0 slow ×10", "p2c-ewma", "p99 ms", "heal+15..20s"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}
