package config

// Stage 3 of loading: defaults. Every service starts from newService, in
// YAML and Procfile mode alike, so each default is written once; derive
// then fills in the defaults that depend on other settings.

// newService returns a service with every default README.md gives; dir is the
// config file's folder.
func (o Options) newService(name, dir string) *Service {
	return &Service{
		Name:         name,
		Dir:          dir,
		Workers:      o.NumCPU,
		ReadyTimeout: DefaultReadyTimeout,
		Timeout:      o.defaultTimeout(),
		DrainTimeout: DefaultDrainTimeout,
		Respawn:      DefaultRespawn,
		Backoff:      DefaultBackoff,
		Restart:      RestartAlways,
		StartLimit:   DefaultStartLimit,
		MinUptime:    DefaultMinUptime,
		MinReady:     DefaultMinReady,
		AfterWhen:    map[string]string{},
		StopSignal:   DefaultStopSignal,
		Log:          LogOptions{Respawns: true},
		BuildTimeout: DefaultBuildTimeout,
	}
}

// derive fills in the defaults that follow from other settings.
func derive(svc *Service) {
	if svc.ReadyWhen == "" {
		svc.ReadyWhen = ReadyStarted
		if len(svc.Listen) > 0 || svc.Proxy != nil {
			svc.ReadyWhen = ReadyListening
		}
	}
	if svc.Backoff > 0 && svc.Backoff < svc.Respawn {
		svc.Backoff = svc.Respawn
	}
}
