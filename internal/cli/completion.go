package cli

import (
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/recluster/recluster/config"
)

func init() {
	register(&verb{
		name:    "completion",
		args:    "bash|zsh|fish",
		summary: "Print a shell completion script: verbs, flags, and the services of the config in reach.\nbash: source <(recluster completion bash); zsh: source <(recluster completion zsh);\nfish: recluster completion fish | source",
		run:     runCompletion,
	})
	register(&verb{name: "__complete", hidden: true, args: "-- WORD… CURRENT",
		summary: "Print the completions of CURRENT after WORDs, one a line (for the completion scripts).", run: runComplete})
}

var completionScripts = map[string]string{
	"bash": `# recluster completion for bash: source <(recluster completion bash)
_recluster() {
  local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"
  if [[ "$prev" == "-f" || "$prev" == "--file" ]] && [[ "${COMP_WORDS[1]}" != "logs" || "$prev" == "--file" ]]; then
    COMPREPLY=($(compgen -f -- "$cur"))
    return
  fi
  local IFS=$'\n'
  COMPREPLY=($(compgen -W "$(recluster __complete -- "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null)" -- "$cur"))
}
complete -o default -F _recluster recluster
`,
	"zsh": `#compdef recluster
# recluster completion for zsh: source <(recluster completion zsh)
_recluster() {
  if [[ ${words[CURRENT-1]} == --file || ( ${words[CURRENT-1]} == -f && ${words[2]} != logs ) ]]; then
    _files
    return
  fi
  local -a candidates
  candidates=(${(f)"$(recluster __complete -- ${words[2,CURRENT]} 2>/dev/null)"})
  compadd -a candidates
}
compdef _recluster recluster
`,
	"fish": `# recluster completion for fish: recluster completion fish | source
function __recluster_complete
    set -l words (commandline -opc) (commandline -ct)
    recluster __complete -- $words[2..-1] 2>/dev/null
end
complete -c recluster -f -a '(__recluster_complete)'
complete -c recluster -l file -r -F
`,
}

func runCompletion(io IO, c *common, args []string) error {
	rest, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(rest) != 1 || completionScripts[rest[0]] == "" {
		return usagef("name one shell: bash, zsh or fish")
	}
	_, err = io.Out.Write([]byte(completionScripts[rest[0]]))
	return err
}

// runComplete prints what may follow: the words typed so far come after
// "--", the last being the one to complete (maybe empty).
func runComplete(io IO, c *common, args []string) error {
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		args = []string{""}
	}
	words, cur := args[:len(args)-1], args[len(args)-1]
	// `recluster -f x.yml VERB …`: the verb comes after the file.
	var lead []string
	for len(words) >= 2 && (words[0] == "-f" || words[0] == "--file") {
		lead, words = append(lead, words[:2]...), words[2:]
	}
	if len(words) == 0 && len(lead) > 0 && strings.HasPrefix(cur, "-") {
		return nil
	}
	var out []string
	switch {
	case len(words) == 0:
		out = commandNames()
	case words[0] == "help" || words[0] == "-h" || words[0] == "--help":
		if len(words) == 1 {
			out = commandNames()
		}
	case words[0] == "completion":
		out = []string{"bash", "zsh", "fish"}
	default:
		v := lookup(words[0])
		if v == nil {
			return nil
		}
		if strings.HasPrefix(cur, "-") {
			out = flagsOf(v)
		} else if v.services {
			out = serviceNames(io, append(lead, words[1:]...))
			if v.name == "scale" {
				for i := range out {
					out[i] += "="
				}
			}
		}
	}
	sort.Strings(out)
	for _, s := range out {
		if strings.HasPrefix(s, cur) {
			fmt.Fprintln(io.Out, s)
		}
	}
	return nil
}

// flagsOf lists a verb's flags, as its run function defines them.
func flagsOf(v *verb) []string {
	quiet := IO{Out: io.Discard, Err: io.Discard, Getenv: func(string) string { return "" }, Getwd: func() (string, error) { return ".", nil }}
	c := newCommon(quiet, v)
	v.run(quiet, c, []string{"--help"})
	var out []string
	c.fs.VisitAll(func(f *flag.Flag) {
		if len(f.Name) == 1 {
			out = append(out, "-"+f.Name)
		} else {
			out = append(out, "--"+f.Name)
		}
	})
	return out
}

// serviceNames reads the services of the config in reach: the one that
// -f or --file names among words, else the one found from here.
func serviceNames(io IO, words []string) []string {
	path := ""
	for i := 0; i+1 < len(words); i++ {
		if words[i] == "-f" || words[i] == "--file" {
			path = words[i+1]
		}
	}
	if path == "" {
		wd, err := io.Getwd()
		if err != nil {
			return nil
		}
		if path, err = config.Find(wd); err != nil {
			return nil
		}
	}
	cfg, err := config.Options{Getenv: io.Getenv}.Load(path)
	if err != nil {
		return nil
	}
	return cfg.Names()
}
