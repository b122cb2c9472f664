package config

import (
	"path/filepath"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// The keys for recluster in the background (`up -d`): where its log
// stream goes and how big that file may grow before it is rotated.

const (
	// DefaultLogSize is how big the background log grows before rotating.
	DefaultLogSize int64 = 10 << 20
	minLogSize     int64 = 4 << 10
	maxLogSize     int64 = 1 << 40
)

// metricsAddress reads `metrics`: where Prometheus scrapes, a tcp
// address.
func (d *decoder) metricsAddress(n *yaml.Node, path string) *Listen {
	const allowed = `a port (9090) or "host:port" ("127.0.0.1:9090")`
	if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!str" && n.ShortTag() != "!!int") || !d.noNUL(n, path, n.Value) {
		d.errorf(n, path, "must be %s, got %s", allowed, kindName(n))
		return nil
	}
	l, err := parseListen(n.Value, "metrics", d.dir)
	switch {
	case err != nil:
		d.errorf(n, path, "%v", err)
		return nil
	case l.Network != "tcp":
		d.errorf(n, path, "%s is not a tcp address; must be %s", l, allowed)
		return nil
	}
	return &l
}

// logFile is a path, relative to the config file's folder.
func (d *decoder) logFile(n *yaml.Node, path string) string {
	s, ok := d.str(n, path)
	if !ok {
		return ""
	}
	if s == "" || strings.HasSuffix(s, "/") {
		d.errorf(n, path, "must be the path of a file, such as logs/recluster.log, got %q", s)
		return ""
	}
	if !filepath.IsAbs(s) {
		s = filepath.Join(d.dir, s)
	}
	return filepath.Clean(s)
}

var sizeUnits = []struct {
	suffix string
	bytes  int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30},
	{"B", 1}, {"", 1},
}

// logSize is a size in bytes: 10MiB, 500KB, 1G, or a number of bytes.
func (d *decoder) logSize(n *yaml.Node, path string) int64 {
	v, ok := d.size(n, path, "a size from 4KiB to 1TiB, such as 10MiB, 500KB or 1G (a bare number is bytes)", minLogSize, maxLogSize)
	if !ok {
		return DefaultLogSize
	}
	return v
}

// size reads a size in bytes from least to most: a number with a unit of
// sizeUnits, or a bare number of bytes.
func (d *decoder) size(n *yaml.Node, path, allowed string, least, most int64) (int64, bool) {
	if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!str" && n.ShortTag() != "!!int") {
		d.errorf(n, path, "must be %s, got %s", allowed, kindName(n))
		return 0, false
	}
	v := strings.TrimSpace(n.Value)
	for _, u := range sizeUnits {
		num, ok := strings.CutSuffix(v, u.suffix)
		if !ok {
			continue
		}
		x, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
		if err != nil || x <= 0 || x > most/u.bytes || x*u.bytes < least {
			break
		}
		return x * u.bytes, true
	}
	d.errorf(n, path, "must be %s, got %q", allowed, n.Value)
	return 0, false
}
