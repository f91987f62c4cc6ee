package main

import (
	"testing"
	"time"
)

// The probe runs for the duration asked, and its worst iteration is at
// least its median (and both are real times, not zero).
func TestSpin(t *testing.T) {
	start := time.Now()
	r := spin(200*time.Millisecond, 1<<14)
	if el := time.Since(start); el < 200*time.Millisecond || el > 2*time.Second {
		t.Fatalf("spin(200ms) took %v", el)
	}
	if r.Iterations < 10 || r.MedianMs <= 0 || r.WorstMs < r.MedianMs || r.WorstAtMs > 200 {
		t.Fatalf("spin result %+v", r)
	}
}
