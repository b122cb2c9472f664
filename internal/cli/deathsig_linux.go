package cli

import "syscall"

// dieWithParent has the kernel kill the child when recluster dies, even
// by SIGKILL, so a one-off command never outlives `recluster run`.
func dieWithParent(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
