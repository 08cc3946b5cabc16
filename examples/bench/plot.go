package main

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// palette gives every policy the same colour in every chart.
var palette = map[string]color.RGBA{
	"v3-pinned":       {R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	"v3-roundrobin":   {R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	"v3-leastrequest": {R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
	"etcdbalance":     {R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	"v2-stock":        {R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	"v2-etcdbalance":  {R: 0x17, G: 0xbe, B: 0xcf, A: 0xff},
}

// writePlots writes, for each table, a bar chart of the member shares and
// a chart of the latency percentiles, and returns the files written.
func writePlots(dir string, rep *report) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("-plots: %w", err)
	}
	var files []string
	for _, g := range []struct {
		proto string
		st    *setup
		rs    []*result
	}{{"v3", rep.V3, rep.Results}, {"v2", rep.V2, rep.V2Results}} {
		if len(g.rs) == 0 || g.st == nil {
			continue
		}
		base := filepath.Join(dir, rep.Scenario+"-"+g.proto)
		title := fmt.Sprintf("%s (%s): ", rep.Scenario, g.proto)
		sp, err := sharePlot(title+"share of requests per member", g.st, g.rs)
		if err != nil {
			return files, err
		}
		if err := sp.Save(8*vg.Inch, 4.5*vg.Inch, base+"-share.svg"); err != nil {
			return files, fmt.Errorf("-plots: %w", err)
		}
		files = append(files, base+"-share.svg")
		lp, err := latencyPlot(title+"latency by percentile", g.rs)
		if err != nil {
			return files, err
		}
		if err := lp.Save(8*vg.Inch, 4.5*vg.Inch, base+"-latency.svg"); err != nil {
			return files, fmt.Errorf("-plots: %w", err)
		}
		files = append(files, base+"-latency.svg")
	}
	return files, nil
}

// sharePlot draws one group of bars per member, one bar per policy, with
// the even share marked by a dashed line.
func sharePlot(title string, st *setup, rs []*result) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = "share of requests answered"
	p.Y.Min = 0
	// Room above a share of 1 for the legend, so that it never covers a
	// bar; the ticks stop at 1.
	p.Y.Max = 1 + 0.055*float64(len(rs)+1)
	p.Y.Tick.Marker = plot.ConstantTicks{{Value: 0, Label: "0"}, {Value: 0.25, Label: "0.25"}, {Value: 0.5, Label: "0.5"}, {Value: 0.75, Label: "0.75"}, {Value: 1, Label: "1"}}
	p.Legend.Top = true
	names := make([]string, len(st.MemberNames))
	for i, n := range st.MemberNames {
		names[i] = n
		if i == st.Leader {
			names[i] += " (leader)"
		}
		if i == st.FaultMember {
			names[i] += " (faulted)"
		}
	}
	groupWidth := vg.Points(float64(60))
	width := groupWidth / vg.Length(len(rs))
	for i, r := range rs {
		bars, err := plotter.NewBarChart(plotter.Values(r.MemberShare), width)
		if err != nil {
			return nil, fmt.Errorf("-plots: %s: %w", r.Policy, err)
		}
		bars.LineStyle.Width = 0
		bars.Color = palette[r.Policy]
		bars.Offset = width*vg.Length(i) - groupWidth/2 + width/2
		p.Add(bars)
		p.Legend.Add(r.Policy, bars)
	}
	even := 1 / float64(len(st.MemberNames))
	line, err := plotter.NewLine(plotter.XYs{{X: -0.5, Y: even}, {X: float64(len(names)) - 0.5, Y: even}})
	if err != nil {
		return nil, err
	}
	line.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	line.Color = color.Gray{Y: 0x80}
	p.Add(line)
	p.Legend.Add("even share", line)
	p.NominalX(names...)
	p.Add(plotter.NewGrid())
	return p, nil
}

// nines maps a percentile q in [0, 1) to -log10(1-q), so that p90, p99
// and p99.9 are evenly spaced and the tail gets as much room as the body.
func nines(q float64) float64 { return -math.Log10(1 - q) }

// latencyPlot draws each policy's latency against its percentile, on a
// log latency axis.
func latencyPlot(title string, rs []*result) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "percentile"
	p.Y.Label.Text = "latency (ms, log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	// Bottom right: the lines climb toward the tail, so that corner stays
	// empty.
	p.Legend.Top = false
	p.Legend.Left = false
	p.X.Tick.Marker = plot.ConstantTicks{
		{Value: nines(0), Label: "p0"}, {Value: nines(0.5), Label: "p50"},
		{Value: nines(0.9), Label: "p90"}, {Value: nines(0.99), Label: "p99"},
		{Value: nines(0.999), Label: "p99.9"}, {Value: nines(0.9999), Label: "p99.99"},
	}
	for _, r := range rs {
		n := len(r.sorted)
		if n == 0 {
			continue
		}
		// Up to the highest percentile the sample can tell apart from
		// the maximum, in steps that are even on the nines axis.
		top := min(0.9999, 1-1/float64(n))
		var pts plotter.XYs
		const steps = 400
		for i := 0; i <= steps; i++ {
			x := nines(top) * float64(i) / steps
			q := 1 - math.Pow(10, -x)
			v := ms(percentile(r.sorted, 100*q))
			pts = append(pts, plotter.XY{X: x, Y: max(v, 0.001)})
		}
		line, err := plotter.NewLine(pts)
		if err != nil {
			return nil, fmt.Errorf("-plots: %s: %w", r.Policy, err)
		}
		line.Color = palette[r.Policy]
		line.Width = vg.Points(1.5)
		p.Add(line)
		p.Legend.Add(r.Policy, line)
	}
	p.Add(plotter.NewGrid())
	return p, nil
}
