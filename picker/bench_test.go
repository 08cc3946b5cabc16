package picker

import (
	"fmt"
	"testing"
	"time"
)

func benchPicker(b *testing.B, pol Policy, n int) *Picker {
	addrs := make([]string, n)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("10.0.0.%d:2379", i+1)
	}
	p := mustNew(b, Config{Policy: pol}, addrs...)
	for i := 0; i < 100; i++ { // every endpoint measured: the steady state
		tk, _ := p.Pick(Request{})
		p.Done(tk, Outcome{})
	}
	return p
}

// BenchmarkPick measures one pick plus its completion, on one goroutine.
func BenchmarkPick(b *testing.B) {
	for _, pol := range Policies() {
		for _, n := range []int{3, 5, 7} {
			b.Run(fmt.Sprintf("policy=%s/endpoints=%d", pol, n), func(b *testing.B) {
				p := benchPicker(b, pol, n)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					tk, err := p.Pick(Request{})
					if err != nil {
						b.Fatal(err)
					}
					p.Done(tk, Outcome{})
				}
			})
		}
	}
}

// BenchmarkPickSkipAvoid is BenchmarkPick for p2c-ewma with one address
// skipped, one endpoint avoided by a tag and a mark pending, as a re-issued
// read of an adapter would be.
func BenchmarkPickSkipAvoid(b *testing.B) {
	for _, n := range []int{3, 5, 7} {
		b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) {
			p := benchPicker(b, P2CEWMA, n)
			if err := p.Mark("10.0.0.2:2379", 2, time.Hour); err != nil {
				b.Fatal(err)
			}
			r := Request{Skip: []string{"10.0.0.1:2379"}, Avoid: 2}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				tk, err := p.Pick(r)
				if err != nil {
					b.Fatal(err)
				}
				p.Done(tk, Outcome{})
			}
		})
	}
}

// BenchmarkPickParallel is BenchmarkPick from GOMAXPROCS goroutines.
func BenchmarkPickParallel(b *testing.B) {
	for _, pol := range Policies() {
		for _, n := range []int{3, 5, 7} {
			b.Run(fmt.Sprintf("policy=%s/endpoints=%d", pol, n), func(b *testing.B) {
				p := benchPicker(b, pol, n)
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						tk, err := p.Pick(Request{})
						if err != nil {
							b.Fatal(err)
						}
						p.Done(tk, Outcome{})
					}
				})
			})
		}
	}
}
