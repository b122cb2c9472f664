package main

import (
	"math"
	"strings"
	"testing"
)

func TestTheIntervalOfTheRatioTellsParityFromALead(t *testing.T) {
	rounds := func(ratios ...float64) ([]result, []result) {
		var h, r []result
		for _, x := range ratios {
			h = append(h, result{requests: 100000})
			r = append(r, result{requests: int(100000 * x)})
		}
		return h, r
	}
	h, r := rounds(0.95, 1.06, 0.98, 1.03)
	if got := roundRatios(h, r); !strings.Contains(got, "0.95 1.06 0.98 1.03 (mean 1.00, 95 %: 0.93–1.09)") {
		t.Errorf("parity: %q", got)
	}
	h, r = rounds(1.10, 1.12, 1.09, 1.11, 1.10)
	if got := roundRatios(h, r); !strings.Contains(got, "(mean 1.10, 95 %: 1.09–1.12)") {
		t.Errorf("a lead: %q", got)
	}
	h, r = rounds(1.2)
	if got := roundRatios(h, r); got != "1.20" {
		t.Errorf("one round has no interval: %q", got)
	}
}

func TestMeanInterval(t *testing.T) {
	m, lo, hi, ok := meanInterval([]float64{1, 2, 3})
	// mean 2, sd 1, t(2) = 4.30: 2 ± 4.30/√3
	if !ok || m != 2 || math.Abs(hi-2-4.30/math.Sqrt(3)) > 1e-9 || math.Abs(2-lo-4.30/math.Sqrt(3)) > 1e-9 {
		t.Errorf("meanInterval(1, 2, 3) = %v, %v, %v, %v", m, lo, hi, ok)
	}
	if _, _, _, ok := meanInterval([]float64{1}); ok {
		t.Error("one value has no interval")
	}
}
