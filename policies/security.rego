package main

import rego.v1

deny_privileged contains msg if {
	some c in all_containers
	c.securityContext.privileged == true
	msg := sprintf("container \"%s\" must not run privileged", [c.name])
}

deny_run_as_root contains msg if {
	some c in all_containers
	not runs_as_non_root(c)
	msg := sprintf("container \"%s\" must set securityContext.runAsNonRoot: true (pod or container level)", [c.name])
}

runs_as_non_root(c) if c.securityContext.runAsNonRoot == true

runs_as_non_root(c) if {
	pod_spec.securityContext.runAsNonRoot == true
	not c.securityContext.runAsNonRoot == false
}

deny_host_path contains msg if {
	some v in pod_spec.volumes
	v.hostPath
	msg := sprintf("volume \"%s\" must not mount a hostPath (%v)", [v.name, object.get(v.hostPath, "path", "")])
}

deny_host_network contains "pod must not use the host network (hostNetwork: true)" if {
	pod_spec.hostNetwork == true
}

deny_host_pid contains "pod must not share the host PID namespace (hostPID: true)" if {
	pod_spec.hostPID == true
}
