package framework

import (
	"testing"
	"time"
)

// Consistently polls cond every 100 ms for the whole duration and fails the
// test, naming what, the first time cond returns an error: the negative of
// Eventually, for "this does not happen" over a span of time.
func Consistently(t testing.TB, duration time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(duration)
	for {
		if err := cond(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if time.Now().After(deadline) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}
