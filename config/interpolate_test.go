package config

import (
	"strings"
	"testing"
)

func TestInterpolateAsComposeAndShDo(t *testing.T) {
	env := map[string]string{"HOST": "db", "EMPTY": "", "PORT": "5432"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	for _, c := range []struct{ in, want string }{
		{"plain", "plain"},
		{"postgres://$HOST/app", "postgres://db/app"},
		{"postgres://${HOST}:${PORT}/app", "postgres://db:5432/app"},
		{"${MISSING:-3000}", "3000"},
		{"${EMPTY:-3000}", "3000"},
		{"${EMPTY-3000}", ""},
		{"${MISSING-3000}", "3000"},
		{"${HOST:-x}", "db"},
		{"${HOST:+set}${MISSING:+no}", "set"},
		{"${EMPTY+set}", "set"},
		{"${MISSING:-${HOST}:${PORT:-1}}", "db:5432"},
		{"pa$$word", "pa$word"},
		{"cost: 5$", "cost: 5$"},
		{"$1 and $-", "$1 and $-"},
		{"$MISSING.", "."},
	} {
		got, err := interpolate(c.in, lookup)
		if err != nil || got != c.want {
			t.Errorf("%q: got %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	for _, c := range []struct{ in, want string }{
		{"${MISSING:?set it in .env}", "MISSING is required: set it in .env"},
		{"${EMPTY:?}", "EMPTY is required: it is not set"},
		{"${HOST", "no closing }"},
		{"${}", "is not a variable"},
		{"${HOST:}", "is not a variable"},
		{"${HOST/a/b}", "is not a variable"},
	} {
		if _, err := interpolate(c.in, lookup); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.in, err, c.want)
		}
	}
	if _, err := interpolate("${EMPTY?}", lookup); err != nil {
		t.Errorf("${EMPTY?} with EMPTY set: %v", err)
	}
}
