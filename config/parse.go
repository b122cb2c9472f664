package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Stage 1 of loading: bytes to one YAML node tree, with merge keys (<<)
// expanded on demand under bounds. yaml.v3 keeps aliases as pointers, so a
// file can describe a graph with cycles (`&a {<<: *a}`) or one whose
// naive expansion is exponential; every walk here is bounded.

const (
	// maxMergeDepth bounds how deeply merges may nest (an anchor merging
	// an anchor merging …).
	maxMergeDepth = 32
	// maxMergedKeys bounds the keys that merges may produce in the whole
	// file, so no file can make loading slow.
	maxMergedKeys = 100000
)

var yamlLineInfo = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parseDocument reads exactly one YAML document. A syntax error, or a
// second document (which yaml.Unmarshal would silently ignore), is a
// positioned problem.
func (d *decoder) parseDocument(data []byte) (*yaml.Node, bool) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		d.errs.add(d.yamlSyntaxError(data, err))
		return nil, false
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		d.errs.add(d.yamlSyntaxError(data, err))
		return nil, false
	default:
		d.errorf(&next, "", "a second YAML document starts here; recluster reads one document a file: remove the `---` and what follows, or merge it into the first")
		return nil, false
	}
	return &doc, true
}

func (d *decoder) yamlSyntaxError(data []byte, err error) *FieldError {
	file := d.file
	msg := strings.TrimSpace(err.Error())
	line := 1
	if m := yamlLineInfo.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	lines := strings.SplitAfter(string(data), "\n")
	if at := faultLine(lines, line, msg, d.opts.onSyntaxProbe); at != line {
		msg += fmt.Sprintf(" (in the block that starts on line %d)", line)
		line = at
	}
	col := 1
	if line-1 < len(lines) {
		text := lines[line-1]
		col = len(text) - len(strings.TrimLeft(text, " \t")) + 1
	}
	return &FieldError{File: file, Line: line, Col: col, Msg: "invalid YAML: " + msg}
}

// faultLine finds the line at fault. yaml.v3 names the line where the
// enclosing block starts; the shortest prefix of the file, from that line
// on, that fails with the same message ends at the line at fault. The
// search gallops (1, 2, 4, … lines past the block's start) and then
// bisects, so it parses O(log k) prefixes for a fault k lines after the
// block's start: linear in the file's size up to that factor.
func faultLine(lines []string, from int, msg string, probed func()) int {
	fails := func(n int) bool {
		if probed != nil {
			probed()
		}
		var probe yaml.Node
		err := yaml.Unmarshal([]byte(strings.Join(lines[:n], "")), &probe)
		return err != nil && strings.HasSuffix(err.Error(), msg)
	}
	if from < 1 || from > len(lines) {
		return from
	}
	if fails(from) {
		return from
	}
	lo, step := from, 1 // lo passes
	hi := -1
	for lo+step <= len(lines) {
		if fails(lo + step) {
			hi = lo + step
			break
		}
		lo += step
		step *= 2
	}
	if hi < 0 {
		if !fails(len(lines)) {
			return from // the failure needs the whole file; keep yaml's line
		}
		hi = len(lines)
	}
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		if fails(mid) {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi
}

type pair struct{ key, value *yaml.Node }

// resolve follows an alias to the node it names.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	return n
}

// expander computes each mapping's entries once, merges included, and
// stops cycles, deep nesting and runaway growth.
type expander struct {
	memo   map[*yaml.Node][]pair
	active []*yaml.Node // mappings being expanded, outermost first
	merged int          // keys produced by merges so far
	failed bool         // a bound was hit; later merges are skipped
}

// pairs returns a mapping's entries with YAML merge keys (<<) expanded,
// reporting duplicate keys. Explicit keys override merged ones.
func (d *decoder) pairs(n *yaml.Node, path string) []pair {
	x := &d.expand
	if out, ok := x.memo[n]; ok {
		return out
	}
	for _, a := range x.active {
		if a == n {
			d.errorf(n, path, "merges itself (a << names the anchor it is part of, directly or through other anchors); a merge must not loop")
			return nil
		}
	}
	if len(x.active) >= maxMergeDepth {
		if !x.failed {
			d.errorf(n, path, "merges nest more than %d deep; flatten the anchors", maxMergeDepth)
			x.failed = true
		}
		return nil
	}
	x.active = append(x.active, n)
	defer func() { x.active = x.active[:len(x.active)-1] }()

	var out, merged []pair
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, path, "keys must be plain names")
			continue
		}
		if k.Value == "<<" && k.Tag == "!!merge" {
			merged = append(merged, d.mergeSources(v, path)...)
			continue
		}
		if seen[k.Value] {
			d.errorf(k, join(path, k.Value), "is set twice; keep one")
			continue
		}
		seen[k.Value] = true
		out = append(out, pair{k, v})
	}
	for _, p := range merged {
		if !seen[p.key.Value] {
			seen[p.key.Value] = true
			out = append(out, p)
		}
	}
	if x.memo == nil {
		x.memo = map[*yaml.Node][]pair{}
	}
	x.memo[n] = out
	return out
}

func (d *decoder) mergeSources(v *yaml.Node, path string) []pair {
	x := &d.expand
	if x.failed {
		return nil
	}
	var sources []*yaml.Node
	switch v.Kind {
	case yaml.MappingNode:
		sources = []*yaml.Node{v}
	case yaml.SequenceNode:
		for _, item := range v.Content {
			if item = resolve(item); item.Kind == yaml.MappingNode {
				sources = append(sources, item)
			} else {
				d.errorf(item, path, "a merge (<<) takes a mapping or a list of mappings")
			}
		}
	default:
		d.errorf(v, path, "a merge (<<) takes a mapping or a list of mappings")
		return nil
	}
	var out []pair
	for _, src := range sources {
		ps := d.pairs(src, path)
		if x.merged += len(ps); x.merged > maxMergedKeys {
			if !x.failed {
				d.errorf(v, path, "merges expand to more than %d keys; use fewer or smaller anchors", maxMergedKeys)
				x.failed = true
			}
			return nil
		}
		out = append(out, ps...)
	}
	return out
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
