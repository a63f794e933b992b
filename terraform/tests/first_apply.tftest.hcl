# What a first `terraform apply` on a real project needs beyond what the
# provider's schema checks (issue 13): each run guards one defect found by
# review against GKE's documented behaviour.

mock_provider "google" {
  source = "./tests/mocks"
}

variables {
  project_id = "jobgen-test-project"
  region     = "us-central1"
  name       = "jobgen"
  master_authorized_networks = [
    { cidr_block = "203.0.113.0/24", display_name = "office" },
  ]
  gpu_pools = [
    {
      name              = "l4"
      machine_type      = "g2-standard-8"
      accelerator_type  = "nvidia-l4"
      accelerator_count = 1
      max_nodes         = 4
    },
  ]
}

# Known only after apply in real life; fixed here so the generated Helm values
# can be checked in plans.
override_resource {
  target          = google_pubsub_subscription.watcher
  override_during = plan
  values = {
    id = "projects/jobgen-test-project/subscriptions/jobgen-retrain-watcher"
  }
}

override_resource {
  target          = google_pubsub_subscription.retrain_requests
  override_during = plan
  values = {
    id = "projects/jobgen-test-project/subscriptions/jobgen-retrain-requests-watcher"
  }
}

override_resource {
  target          = google_pubsub_topic.dead_letter
  override_during = plan
  values = {
    id = "projects/jobgen-test-project/topics/jobgen-data-events-dead-letter"
  }
}

override_resource {
  target          = google_service_account.watcher
  override_during = plan
  values = {
    email  = "jobgen-watcher@jobgen-test-project.iam.gserviceaccount.com"
    member = "serviceAccount:jobgen-watcher@jobgen-test-project.iam.gserviceaccount.com"
    name   = "projects/jobgen-test-project/serviceAccounts/jobgen-watcher@jobgen-test-project.iam.gserviceaccount.com"
  }
}

run "private_control_plane_reaches_the_webhooks" {
  command = plan

  assert {
    condition     = google_container_cluster.this.private_cluster_config[0].enable_private_nodes && length(google_compute_firewall.master_webhooks) == 1
    error_message = "a private cluster needs the control plane -> nodes webhook rule"
  }
  assert {
    condition     = google_compute_firewall.master_webhooks[0].direction == "INGRESS" && tolist(google_compute_firewall.master_webhooks[0].source_ranges) == tolist(["172.16.0.0/28"])
    error_message = "the rule admits the control plane's /28 (master_ipv4_cidr_block)"
  }
  assert {
    condition     = anytrue([for a in google_compute_firewall.master_webhooks[0].allow : a.protocol == "tcp" && contains(a.ports, "9443")])
    error_message = "the training-operator's webhook port tcp 9443 must be open from the control plane"
  }
  assert {
    condition     = google_compute_firewall.master_webhooks[0].priority < google_compute_firewall.deny_ingress.priority
    error_message = "the webhook rule must win over the explicit deny-all"
  }
}

run "webhook_rule_follows_master_cidr" {
  command = plan
  variables {
    master_ipv4_cidr_block = "172.16.32.0/28"
    webhook_ports          = [9443, 8443]
  }
  assert {
    condition     = tolist(google_compute_firewall.master_webhooks[0].source_ranges) == tolist(["172.16.32.0/28"]) && anytrue([for a in google_compute_firewall.master_webhooks[0].allow : toset(a.ports) == toset(["9443", "8443"])])
    error_message = "the rule follows master_ipv4_cidr_block and webhook_ports"
  }
}

run "image_streaming_has_its_prerequisites" {
  command = plan

  assert {
    condition     = google_container_cluster.this.node_pool_defaults[0].node_config_defaults[0].gcfs_config[0].enabled
    error_message = "image streaming is on by default"
  }
  assert {
    condition     = google_project_iam_member.nodes_service_usage[0].role == "roles/serviceusage.serviceUsageConsumer"
    error_message = "image streaming needs serviceUsageConsumer for the node service account (terraform-google-kubernetes-engine#2251)"
  }
  assert {
    condition     = google_project_service.feature["containerfilesystem.googleapis.com"].disable_on_destroy == false
    error_message = "image streaming needs containerfilesystem.googleapis.com (never disabled on destroy)"
  }
}

run "no_image_streaming_no_prerequisites" {
  command = plan
  variables {
    enable_image_streaming = false
  }
  assert {
    condition     = length(google_project_iam_member.nodes_service_usage) == 0 && !contains(keys(google_project_service.feature), "containerfilesystem.googleapis.com")
    error_message = "without image streaming neither the grant nor the API is needed"
  }
  assert {
    condition     = !google_container_cluster.this.node_pool_defaults[0].node_config_defaults[0].gcfs_config[0].enabled && !google_container_node_pool.system.node_config[0].gcfs_config[0].enabled
    error_message = "enable_image_streaming = false turns it off everywhere"
  }
}

run "cloud_build_can_build_on_a_new_project" {
  command = plan

  assert {
    condition     = contains(keys(google_project_service.feature), "cloudbuild.googleapis.com")
    error_message = "make images needs the Cloud Build API"
  }
  assert {
    condition     = google_project_iam_member.build_logs[0].role == "roles/logging.logWriter" && google_artifact_registry_repository_iam_member.build_push[0].role == "roles/artifactregistry.writer"
    error_message = "the build service account writes logs and pushes to the registry"
  }
  assert {
    condition     = google_storage_bucket_iam_member.build_sources[0].role == "roles/storage.objectViewer" && module.bucket_build[0].name == "jobgen-test-project-jobgen-build"
    error_message = "the build service account reads the staged sources"
  }
  assert {
    condition     = module.bucket_build[0].settings.delete_after_days == 7 && module.bucket_build[0].settings.public_access_prevention == "enforced"
    error_message = "staged sources are private and expire after a week"
  }
}

run "cmek_service_agents_exist_before_their_grants" {
  command = plan
  variables {
    kms_key_name            = "projects/jobgen-test-project/locations/us-central1/keyRings/r/cryptoKeys/k"
    database_encryption_key = "projects/jobgen-test-project/locations/us-central1/keyRings/r/cryptoKeys/k"
  }
  assert {
    condition     = toset(keys(terraform_data.service_agent)) == toset(["pubsub.googleapis.com", "artifactregistry.googleapis.com", "container.googleapis.com"]) && terraform_data.service_agent["artifactregistry.googleapis.com"].input.project == "jobgen-test-project"
    error_message = "the Artifact Registry, Pub/Sub and GKE service agents are created before the key grants"
  }
  assert {
    condition     = google_kms_crypto_key_iam_member.ar_agent[0].member == "serviceAccount:service-123456789012@gcp-sa-artifactregistry.iam.gserviceaccount.com" && google_kms_crypto_key_iam_member.pubsub_agent[0].member == "serviceAccount:service-123456789012@gcp-sa-pubsub.iam.gserviceaccount.com"
    error_message = "the key grants go to those agents"
  }
}

run "pubsub_agent_is_created_without_cmek" {
  command = plan
  assert {
    condition     = toset(keys(terraform_data.service_agent)) == toset(["pubsub.googleapis.com"])
    error_message = "the dead-letter grants need the Pub/Sub agent on every project; AR's only with CMEK"
  }
}

run "compact_on_n1_rejected" {
  command = plan
  variables {
    gpu_pools = [{ name = "t4", machine_type = "n1-standard-8", accelerator_type = "nvidia-tesla-t4", accelerator_count = 1, max_nodes = 2, placement_policy = "COMPACT", zones = ["us-central1-a"] }]
  }
  expect_failures = [var.gpu_pools]
}

run "compact_on_g2_accepted" {
  command = plan
  variables {
    gpu_pools = [{ name = "l4", machine_type = "g2-standard-8", accelerator_type = "nvidia-l4", accelerator_count = 1, max_nodes = 2, placement_policy = "COMPACT", zones = ["us-central1-a"] }]
  }
  assert {
    condition     = output.gpu_node_pools["l4"].placement_policy == "COMPACT"
    error_message = "G2 supports compact placement"
  }
}

run "notification_prefix_without_slash_rejected" {
  command = plan
  variables {
    data_notification_prefix = "incoming"
  }
  expect_failures = [var.data_notification_prefix]
}

run "notification_prefix_empty_accepted" {
  command = plan
  variables {
    data_notification_prefix = ""
  }
  assert {
    condition     = google_storage_notification.data_finalize.object_name_prefix == null
    error_message = "an empty prefix watches the whole bucket"
  }
}

run "subscription_matches_the_contract" {
  command = plan
  assert {
    condition = alltrue([for s in [google_pubsub_subscription.watcher, google_pubsub_subscription.retrain_requests] :
      s.ack_deadline_seconds == 60 && s.retry_policy[0].minimum_backoff == "10s" && s.retry_policy[0].maximum_backoff == "600s"
    && s.dead_letter_policy[0].max_delivery_attempts == 10 && s.message_retention_duration == "604800s"])
    error_message = "CONTRACTS.md: ack 60 s, backoff 10-600 s, 10 delivery attempts, 7 days retention"
  }
}

run "watcher_state_bucket" {
  command = plan

  assert {
    condition     = module.bucket_watcher_state.name == "jobgen-test-project-jobgen-watcher-state" && output.watcher_state_bucket == module.bucket_watcher_state.name
    error_message = "the state bucket is <prefix>-watcher-state (output watcher_state_bucket)"
  }
  assert {
    condition     = module.bucket_watcher_state.settings.delete_after_days == 30 && !module.bucket_watcher_state.settings.versioning && module.bucket_watcher_state.settings.uniform_bucket_level_access
    error_message = "state objects expire after watcher_state_retention_days (30); no versioning; uniform access"
  }
  assert {
    condition     = google_storage_bucket_iam_member.watcher_state_admin.role == "roles/storage.objectAdmin" && google_storage_bucket_iam_member.watcher_state_admin.member == "serviceAccount:jobgen-watcher@jobgen-test-project.iam.gserviceaccount.com"
    error_message = "the watcher's GSA administers the state objects"
  }
  assert {
    condition     = yamldecode(output.watcher_helm_values).gcp.stateBucket == "jobgen-test-project-jobgen-watcher-state"
    error_message = "the chart gets gcp.stateBucket"
  }
}

run "watcher_job_uses_the_projects_image_and_buckets" {
  command = plan
  variables {
    watcher_image_tag = "0123456789ab"
  }
  assert {
    condition     = yamldecode(output.watcher_helm_values).jobs.train.image == "us-central1-docker.pkg.dev/jobgen-test-project/jobgen-images/trainer:0123456789ab"
    error_message = "the watcher's job runs the project's trainer image at the built tag: ${output.watcher_helm_values}"
  }
  assert {
    condition     = yamldecode(output.watcher_helm_values).jobs.train.storage.output == "gs://jobgen-test-project-jobgen-models/retrain" && yamldecode(output.watcher_helm_values).jobs.train.storage.checkpoints == "gs://jobgen-test-project-jobgen-checkpoints"
    error_message = "the watcher's job writes to the project's models and checkpoints buckets"
  }
  assert {
    condition     = yamldecode(output.watcher_helm_values).image.repository == "us-central1-docker.pkg.dev/jobgen-test-project/jobgen-images/watcher"
    error_message = "the watcher runs from the project's registry"
  }
  assert {
    condition     = yamldecode(output.watcher_helm_values).metrics.podMonitoring.enabled
    error_message = "with managed Prometheus the chart creates its PodMonitoring"
  }
  assert {
    condition     = !strcontains(output.watcher_helm_values, "my-project") && !strcontains(output.watcher_helm_values, "example")
    error_message = "no placeholder in the values make cluster applies"
  }
}

run "kept_buckets_are_adopted" {
  command = plan
  variables {
    adopt_existing_buckets = ["data", "models", "checkpoints", "watcher-state"]
  }
  # The mock provider imports only overridden resources: these stand for the
  # buckets that `make destroy KEEP_BUCKETS=1` left behind.
  override_resource {
    target          = module.bucket_data.google_storage_bucket.this
    override_during = plan
    values = {
      name = "jobgen-test-project-jobgen-data"
    }
  }
  override_resource {
    target          = module.bucket_models.google_storage_bucket.this
    override_during = plan
    values = {
      name = "jobgen-test-project-jobgen-models"
    }
  }
  override_resource {
    target          = module.bucket_checkpoints.google_storage_bucket.this
    override_during = plan
    values = {
      name = "jobgen-test-project-jobgen-checkpoints"
    }
  }
  override_resource {
    target          = module.bucket_watcher_state.google_storage_bucket.this
    override_during = plan
    values = {
      name = "jobgen-test-project-jobgen-watcher-state"
    }
  }
  assert {
    condition     = module.bucket_data.name == "jobgen-test-project-jobgen-data" && output.bucket_names["watcher-state"] == "jobgen-test-project-jobgen-watcher-state"
    error_message = "adopted buckets keep their names"
  }
}

run "adopting_an_unknown_bucket_rejected" {
  command = plan
  variables {
    adopt_existing_buckets = ["logs"]
  }
  expect_failures = [var.adopt_existing_buckets]
}

run "registry_cleanup_deletes_old_tagged_images" {
  command = plan
  assert {
    condition     = anytrue([for p in google_artifact_registry_repository.images.cleanup_policies : p.id == "delete-old" && p.action == "DELETE" && try(p.condition[0].tag_state, "") == "ANY" && try(p.condition[0].older_than, "") == "2592000s"])
    error_message = "versions older than 30 days are deleted whether tagged or not"
  }
  assert {
    condition     = anytrue([for p in google_artifact_registry_repository.images.cleanup_policies : p.id == "keep-recent" && p.action == "KEEP" && try(p.most_recent_versions[0].keep_count, 0) == 20])
    error_message = "the 20 most recent versions of each image are kept"
  }
  assert {
    condition     = !google_artifact_registry_repository.images.cleanup_policy_dry_run
    error_message = "the cleanup policies act (no dry run)"
  }
}

run "long_bucket_names_rejected" {
  command = plan
  variables {
    project_id = "a-very-long-project-id-012345"
    name       = "a-long-cluster-name1"
  }
  expect_failures = [var.bucket_prefix]
}

run "no_github_no_federation" {
  command = plan
  assert {
    condition     = !google_container_cluster.this.control_plane_endpoints_config[0].dns_endpoint_config[0].allow_external_traffic
    error_message = "the DNS endpoint is closed unless asked for"
  }
  assert {
    condition     = length(google_iam_workload_identity_pool.github) == 0 && length(google_service_account.ci_deploy) == 0 && output.github_workload_identity_provider == null
    error_message = "without github_repository nothing federates"
  }
}

run "github_federation_is_restricted_to_one_repository_and_branch" {
  command = plan
  variables {
    github_repository = "acme/jobgen"
  }
  override_resource {
    target          = google_iam_workload_identity_pool.github
    override_during = plan
    values = {
      name = "projects/123456789012/locations/global/workloadIdentityPools/jobgen-github"
    }
  }
  assert {
    condition     = google_iam_workload_identity_pool_provider.github[0].attribute_condition == "assertion.sub == 'repo:acme/jobgen:ref:refs/heads/main' || assertion.sub == 'repo:acme/jobgen:pull_request'"
    error_message = "the provider accepts only acme/jobgen's runs on main and on pull requests"
  }
  assert {
    condition     = google_iam_workload_identity_pool_provider.github[0].oidc[0].issuer_uri == "https://token.actions.githubusercontent.com"
    error_message = "GitHub's OIDC issuer"
  }
  assert {
    condition     = google_service_account_iam_member.ci_deploy_wif[0].member == "principalSet://iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/jobgen-github/attribute.repo_ref/acme/jobgen@refs/heads/main"
    error_message = "only runs on refs/heads/main of acme/jobgen may deploy: ${google_service_account_iam_member.ci_deploy_wif[0].member}"
  }
  assert {
    condition     = google_service_account_iam_member.ci_plan_wif[0].member == "principalSet://iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/jobgen-github/attribute.repository/acme/jobgen"
    error_message = "the plan identity is for the repository's runs"
  }
  assert {
    condition     = alltrue([for r in keys(google_project_iam_member.ci_plan) : !contains(["roles/owner", "roles/editor", "roles/viewer"], r)]) && length(google_project_iam_member.ci_plan) > 0
    error_message = "the plan identity is read-only without primitive roles"
  }
  assert {
    condition     = contains(keys(google_project_service.feature), "sts.googleapis.com") && contains(keys(google_project_service.feature), "iamcredentials.googleapis.com")
    error_message = "federation needs the STS and IAM credentials APIs"
  }
}

run "dns_endpoint_for_ci" {
  command = plan
  variables {
    github_repository   = "acme/jobgen"
    enable_dns_endpoint = true
  }
  assert {
    condition     = google_container_cluster.this.control_plane_endpoints_config[0].dns_endpoint_config[0].allow_external_traffic
    error_message = "the deploy workflow reaches the control plane through its DNS endpoint"
  }
}

run "github_other_branch" {
  command = plan
  variables {
    github_repository    = "acme/jobgen"
    github_deploy_branch = "release"
  }
  override_resource {
    target          = google_iam_workload_identity_pool.github
    override_during = plan
    values = {
      name = "projects/123456789012/locations/global/workloadIdentityPools/jobgen-github"
    }
  }
  assert {
    condition     = endswith(google_service_account_iam_member.ci_deploy_wif[0].member, "/attribute.repo_ref/acme/jobgen@refs/heads/release")
    error_message = "the deploy branch is configurable"
  }
}

run "bad_github_repository_rejected" {
  command = plan
  variables {
    github_repository = "https://github.com/acme/jobgen"
  }
  expect_failures = [var.github_repository]
}

run "alert_policies" {
  command = plan
  variables {
    enable_dcgm_metrics = true
  }
  assert {
    condition     = toset(keys(google_monitoring_alert_policy.this)) == toset(["dead_lettered", "watcher_not_ready", "gpu_idle"])
    error_message = "three alert policies with DCGM on"
  }
  assert {
    condition     = strcontains(google_monitoring_alert_policy.this["dead_lettered"].conditions[0].condition_prometheus_query_language[0].query, "retrain_dead_lettered_total") && endswith(google_monitoring_alert_policy.this["dead_lettered"].conditions[0].condition_prometheus_query_language[0].query, "> 0")
    error_message = "dead-lettered messages > 0 alert"
  }
  assert {
    condition     = google_monitoring_alert_policy.this["watcher_not_ready"].conditions[0].condition_prometheus_query_language[0].duration == "600s"
    error_message = "the watcher must be not ready for 10 minutes"
  }
  assert {
    condition     = google_monitoring_alert_policy.this["gpu_idle"].conditions[0].condition_prometheus_query_language[0].duration == "1800s"
    error_message = "GPU nodes idle for 30 minutes"
  }
  assert {
    condition     = contains(tolist(google_container_cluster.this.monitoring_config[0].enable_components), "POD")
    error_message = "the pod metrics the idle alert reads are collected"
  }
}

run "alerts_without_dcgm" {
  command = plan
  assert {
    condition     = toset(keys(google_monitoring_alert_policy.this)) == toset(["dead_lettered", "watcher_not_ready"])
    error_message = "the idle-GPU alert needs DCGM metrics"
  }
}

run "alerts_need_managed_prometheus" {
  command = plan
  variables {
    enable_managed_prometheus = false
  }
  expect_failures = [var.enable_alert_policies]
}
