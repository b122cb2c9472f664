//go:build !linux

package cli

// watchRemoval does nothing where inotify is missing: a removed control
// socket stays removed until recluster up restarts.
func watchRemoval(path string, stop <-chan struct{}, gone func()) error {
	<-stop
	return nil
}
