package control

import "fmt"

// The API's figures as `status` and the view show them, so that both say
// the same.

// RSSText is a worker's memory in a few characters.
func RSSText(rss int64) string {
	switch {
	case rss <= 0:
		return "-"
	case rss < 10<<20:
		return fmt.Sprintf("%.1fM", float64(rss)/(1<<20))
	case rss < 10<<30:
		return fmt.Sprintf("%dM", rss>>20)
	}
	return fmt.Sprintf("%.1fG", float64(rss)/(1<<30))
}

// Word is a worker's last probe in a word or two; "-" when it has none.
func (h *Health) Word() string {
	switch {
	case h == nil:
		return "-"
	case h.OK:
		return "ok"
	case h.Ready:
		return "not yet"
	}
	return fmt.Sprintf("failing %d", h.Failures)
}
