package config

import (
	"fmt"
	"strings"
)

// interpolate expands variables in s as Docker Compose and POSIX sh do:
// $NAME and ${NAME}; ${NAME:-default} (unset or empty) and
// ${NAME-default} (unset); ${NAME:+other} and ${NAME+other};
// ${NAME:?message} and ${NAME?message}, an error when the variable is
// missing; $$ is a dollar. A default or other may itself hold variables.
// A $ that starts none of these is kept as it is.
func interpolate(s string, lookup func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '$' || i+1 == len(s) {
			b.WriteByte(c)
			continue
		}
		next := s[i+1]
		switch {
		case next == '$':
			b.WriteByte('$')
			i++
		case next == '{':
			end := closingBrace(s, i+2)
			if end < 0 {
				return "", fmt.Errorf("%q has a ${ with no closing }; write $$ for a dollar sign", s)
			}
			v, err := expandBraced(s[i+2:end], lookup)
			if err != nil {
				return "", err
			}
			b.WriteString(v)
			i = end
		case isNameStart(next):
			j := i + 1
			for j < len(s) && isNameChar(s[j]) {
				j++
			}
			v, _ := lookup(s[i+1 : j])
			b.WriteString(v)
			i = j - 1
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

// closingBrace finds the } that closes a ${ whose body starts at from,
// past nested ${…}; -1 when there is none.
func closingBrace(s string, from int) int {
	depth := 0
	for i := from; i < len(s); i++ {
		switch {
		case s[i] == '$' && i+1 < len(s) && s[i+1] == '{':
			depth++
			i++
		case s[i] == '}':
			if depth == 0 {
				return i
			}
			depth--
		}
	}
	return -1
}

// expandBraced expands the body of ${…}.
func expandBraced(body string, lookup func(string) (string, bool)) (string, error) {
	j := 0
	for j < len(body) && isNameChar(body[j]) {
		j++
	}
	name, rest := body[:j], body[j:]
	if name == "" || !isNameStart(name[0]) {
		return "", fmt.Errorf("${%s} is not a variable; use ${NAME}, ${NAME:-default}, ${NAME:?message} or $$ for a dollar sign", body)
	}
	value, set := lookup(name)
	if rest == "" {
		return value, nil
	}
	colon := strings.HasPrefix(rest, ":")
	if colon {
		rest = rest[1:]
	}
	if rest == "" {
		return "", fmt.Errorf("${%s} is not a variable; use ${NAME}, ${NAME:-default}, ${NAME:?message} or $$ for a dollar sign", body)
	}
	op, word := rest[0], rest[1:]
	present := set && (!colon || value != "")
	switch op {
	case '-':
		if present {
			return value, nil
		}
		return interpolate(word, lookup)
	case '+':
		if present {
			return interpolate(word, lookup)
		}
		return "", nil
	case '?':
		if present {
			return value, nil
		}
		msg, err := interpolate(word, lookup)
		if err != nil {
			return "", err
		}
		if msg == "" {
			msg = "it is not set"
		}
		return "", fmt.Errorf("%s is required: %s", name, msg)
	}
	return "", fmt.Errorf("${%s} is not a variable; use ${NAME}, ${NAME:-default}, ${NAME:?message} or $$ for a dollar sign", body)
}

func isNameStart(c byte) bool { return c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' }
func isNameChar(c byte) bool  { return isNameStart(c) || c >= '0' && c <= '9' }
