package main

import rego.v1

obj(api_version, kind) := {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}}

test_removed_apis_denied if {
	every pair in [
		["extensions/v1beta1", "Deployment"], ["apps/v1beta1", "Deployment"], ["apps/v1beta2", "StatefulSet"],
		["policy/v1beta1", "PodSecurityPolicy"], ["batch/v1beta1", "CronJob"],
		["networking.k8s.io/v1beta1", "Ingress"], ["autoscaling/v2beta2", "HorizontalPodAutoscaler"],
		["rbac.authorization.k8s.io/v1beta1", "ClusterRole"], ["storage.k8s.io/v1beta1", "StorageClass"],
	] {
		count(deny_removed_api) == 1 with input as obj(pair[0], pair[1])
	}
}

test_current_apis_allowed if {
	every pair in [
		["apps/v1", "Deployment"], ["batch/v1", "CronJob"], ["networking.k8s.io/v1", "Ingress"],
		["autoscaling/v2", "HorizontalPodAutoscaler"], ["policy/v1", "PodDisruptionBudget"],
	] {
		count(deny_removed_api) + count(warn_deprecated_api) == 0 with input as obj(pair[0], pair[1])
	}
}

# A literal input: rego-cpp quotes string literals passed to a function (obj) when
# they are later formatted with %s.
test_removed_message_names_replacement if {
	deny_removed_api == {"extensions/v1beta1 Ingress is no longer served since Kubernetes 1.22; use networking.k8s.io/v1"} with input as {"apiVersion": "extensions/v1beta1", "kind": "Ingress", "metadata": {"name": "x"}}
}

test_deprecated_api_warned if {
	count(warn_deprecated_api) == 1 with input as obj("v1", "Endpoints")
	count(deny_removed_api) == 0 with input as obj("v1", "Endpoints")
}

# deny_removed_api only consults removed_apis for beta versions.
test_removed_apis_are_all_beta_versions if {
	every api_version, _ in removed_apis {
		contains(api_version, "beta")
	}
}
