package picker_test

import (
	"fmt"
	"time"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// stepClock is a clock that a program moves by hand, as a simulation would.
type stepClock struct{ t time.Time }

func (c *stepClock) Now() time.Time { return c.t }

func Example() {
	clk := &stepClock{t: time.Unix(0, 0)}
	p, err := picker.New(picker.Config{Clock: clk, Rand: picker.NewSource(1)})
	if err != nil {
		panic(err)
	}
	if err := p.SetEndpoints([]string{"m1:2379", "m2:2379", "m3:2379"}); err != nil {
		panic(err)
	}
	latency := map[string]time.Duration{"m1:2379": 2 * time.Millisecond, "m2:2379": 2 * time.Millisecond, "m3:2379": 40 * time.Millisecond}
	served := map[string]int{}
	for i := 0; i < 1000; i++ {
		t, err := p.Pick(picker.Request{})
		if err != nil {
			panic(err)
		}
		served[t.Addr()]++
		clk.t = clk.t.Add(latency[t.Addr()]) // the request takes this long
		p.Done(t, picker.Outcome{})
	}
	fmt.Println("slow member served fewer than 5%:", served["m3:2379"] < 50)
	// Output: slow member served fewer than 5%: true
}

// A read re-issued after a stale answer skips the member that gave it,
// and that member is avoided for a while.
func ExamplePicker_Mark() {
	const stale picker.Tags = 1
	p, err := picker.New(picker.Config{Rand: picker.NewSource(1)})
	if err != nil {
		panic(err)
	}
	if err := p.SetEndpoints([]string{"m1:2379", "m2:2379"}); err != nil {
		panic(err)
	}
	first, _ := p.Pick(picker.Request{Avoid: stale})
	p.Done(first, picker.Outcome{})
	// Say the answer was stale: ask the other member, and avoid this one
	// for two seconds (it serves only if no other member may).
	if err := p.Mark(first.Addr(), stale, 2*time.Second); err != nil {
		panic(err)
	}
	again, _ := p.Pick(picker.Request{Avoid: stale, Skip: []string{first.Addr()}})
	p.Done(again, picker.Outcome{})
	next, _ := p.Pick(picker.Request{Avoid: stale})
	p.Done(next, picker.Outcome{})
	fmt.Println("re-issued elsewhere:", again.Addr() != first.Addr())
	fmt.Println("marked member avoided:", next.Addr() != first.Addr())
	// Output:
	// re-issued elsewhere: true
	// marked member avoided: true
}

func ExampleParsePolicy() {
	pol, err := picker.ParsePolicy("round-robin")
	fmt.Println(pol, err)
	_, err = picker.ParsePolicy("fastest")
	fmt.Println(err)
	// Output:
	// round-robin <nil>
	// picker: unknown policy "fastest" (want one of [p2c-ewma least-outstanding round-robin shuffled-pin pinned])
}
