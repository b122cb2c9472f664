package config

import (
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/go-multierror"
)

// FieldError is one problem in a config file, at a line and column.
type FieldError struct {
	File string
	Line int
	Col  int
	// Path names the setting, such as "services.api.workers"; empty for
	// problems of the file as a whole (YAML syntax).
	Path string
	// Msg says what is wrong and what is allowed.
	Msg string
}

func (e *FieldError) Error() string {
	where := fmt.Sprintf("%s:%d:%d: ", e.File, e.Line, e.Col)
	if e.Path == "" {
		return where + e.Msg
	}
	return where + e.Path + ": " + e.Msg
}

// errorList gathers FieldErrors and returns them, sorted by position, as one
// *multierror.Error that prints one problem per line.
type errorList []*FieldError

func (l *errorList) add(e *FieldError) { *l = append(*l, e) }

func (l errorList) err() error {
	if len(l) == 0 {
		return nil
	}
	sort.SliceStable(l, func(i, j int) bool {
		if l[i].Line != l[j].Line {
			return l[i].Line < l[j].Line
		}
		return l[i].Col < l[j].Col
	})
	merr := &multierror.Error{ErrorFormat: listFormat}
	for _, e := range l {
		merr.Errors = append(merr.Errors, e)
	}
	return merr
}

// listFormat prints one error per line, with no header: each line already
// says where it is, and editors can jump to FILE:LINE:COL.
func listFormat(errs []error) string {
	lines := make([]string, len(errs))
	for i, e := range errs {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Problems returns the individual problems in err, in file order, or nil
// when err is not a config validation error.
func Problems(err error) []*FieldError {
	merr, ok := err.(*multierror.Error)
	if !ok {
		return nil
	}
	out := make([]*FieldError, 0, len(merr.Errors))
	for _, e := range merr.Errors {
		if fe, ok := e.(*FieldError); ok {
			out = append(out, fe)
		}
	}
	return out
}

// Closest returns the candidate within an edit distance of 2 of word, for
// a "did you mean" hint, or "".
func Closest(word string, candidates []string) string {
	best, bestDist := "", 3
	for _, c := range candidates {
		if d := editDistance(strings.ToLower(word), strings.ToLower(c)); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance counts the insertions, deletions, substitutions and swaps
// of neighbours that turn a into b (optimal string alignment), so that a
// swapped pair of letters ("stauts") is one slip, not two.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
