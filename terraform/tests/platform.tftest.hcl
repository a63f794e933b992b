# Plan-only tests of the root module against a mocked google provider:
# no credentials, no API calls. Run: hack/terraform/test.sh (or, with the
# provider in the local mirror, terraform -chdir=terraform test).

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

run "cluster_is_private_hardened_and_observable" {
  command = plan

  assert {
    condition     = google_container_cluster.this.private_cluster_config[0].enable_private_nodes
    error_message = "nodes must be private"
  }
  assert {
    condition     = google_container_cluster.this.workload_identity_config[0].workload_pool == "jobgen-test-project.svc.id.goog"
    error_message = "Workload Identity must be on, with the project's pool"
  }
  assert {
    condition     = google_container_cluster.this.datapath_provider == "ADVANCED_DATAPATH"
    error_message = "Dataplane V2 must be on"
  }
  assert {
    condition     = google_container_cluster.this.enable_shielded_nodes
    error_message = "shielded nodes must be on"
  }
  assert {
    condition     = google_container_cluster.this.addons_config[0].gcs_fuse_csi_driver_config[0].enabled
    error_message = "the GCS FUSE CSI driver must be on"
  }
  assert {
    condition     = google_container_cluster.this.node_pool_defaults[0].node_config_defaults[0].gcfs_config[0].enabled
    error_message = "image streaming must be the default"
  }
  assert {
    condition     = google_container_cluster.this.release_channel[0].channel == "REGULAR"
    error_message = "the cluster must be on the REGULAR channel by default"
  }
  assert {
    condition     = google_container_cluster.this.deletion_protection
    error_message = "deletion_protection must default to true"
  }
  assert {
    condition     = google_container_cluster.this.location == "us-central1"
    error_message = "without zone the cluster is regional"
  }
  assert {
    condition     = [for c in google_container_cluster.this.master_authorized_networks_config[0].cidr_blocks : c.cidr_block] == ["203.0.113.0/24"]
    error_message = "master authorized networks must be exactly the configured ones"
  }
  assert {
    condition     = google_container_cluster.this.master_authorized_networks_config[0].gcp_public_cidrs_access_enabled == false
    error_message = "Google Cloud public IPs must not reach the control plane"
  }
  assert {
    condition     = google_container_cluster.this.monitoring_config[0].managed_prometheus[0].enabled
    error_message = "managed Prometheus is on by default"
  }
  assert {
    condition     = !contains(tolist(google_container_cluster.this.monitoring_config[0].enable_components), "DCGM")
    error_message = "DCGM metrics are off by default"
  }
  assert {
    condition     = google_container_cluster.this.remove_default_node_pool
    error_message = "the default pool must be removed"
  }
  assert {
    condition     = google_compute_router_nat.this.source_subnetwork_ip_ranges_to_nat == "LIST_OF_SUBNETWORKS" && google_compute_subnetwork.nodes.private_ip_google_access
    error_message = "private nodes need Cloud NAT on their subnet and Private Google Access"
  }
}

run "node_pools_least_privilege_and_gpu_taint" {
  command = plan

  override_data {
    target = module.gpu_pool["l4"].data.google_compute_machine_types.zone["us-central1-f"]
    values = {
      machine_types = []
    }
  }

  assert {
    condition     = google_project_iam_member.nodes.role == "roles/container.defaultNodeServiceAccount"
    error_message = "the node service account gets only the node role at project level"
  }
  assert {
    condition     = google_container_node_pool.system.node_config[0].workload_metadata_config[0].mode == "GKE_METADATA"
    error_message = "the system pool must use the GKE metadata server"
  }
  assert {
    condition     = length(google_container_node_pool.system.node_config[0].taint) == 0
    error_message = "the system pool has no taints"
  }
  assert {
    condition     = google_container_node_pool.system.autoscaling[0].total_min_node_count == 1 && google_container_node_pool.system.autoscaling[0].total_max_node_count == 3
    error_message = "the system pool keeps 1 to 3 nodes in total"
  }
  assert {
    condition     = jsonencode([for t in output.gpu_node_pools["l4"].taints : "${t.key}=${t.value}:${t.effect}"]) == jsonencode(["nvidia.com/gpu=present:NO_SCHEDULE"])
    error_message = "GPU pools carry exactly the nvidia.com/gpu=present:NoSchedule taint"
  }
  assert {
    condition     = output.gpu_node_pools["l4"].total_min_node_count == 0 && output.gpu_node_pools["l4"].total_max_node_count == 4
    error_message = "GPU pools scale from 0 to max_nodes in total"
  }
  assert {
    condition     = output.gpu_node_pools["l4"].gpu_driver_version == "LATEST"
    error_message = "GKE installs the latest GPU driver by default"
  }
  assert {
    condition     = output.gpu_node_pools["l4"].workload_metadata == "GKE_METADATA" && output.gpu_node_pools["l4"].secure_boot
    error_message = "GPU nodes use Workload Identity metadata and secure boot"
  }
  assert {
    condition     = output.gpu_node_pools["l4"].node_locations == tolist(["us-central1-a", "us-central1-b", "us-central1-c"])
    error_message = "zones are those of the region that offer g2-standard-8 (mock: not us-central1-f), got ${jsonencode(output.gpu_node_pools["l4"].node_locations)}"
  }
  assert {
    condition     = !output.gpu_node_pools["l4"].spot && !output.gpu_node_pools["l4"].queued_provisioning && output.gpu_node_pools["l4"].placement_policy == "NONE"
    error_message = "a plain pool is on-demand, not queued, not compact"
  }
}

run "buckets_private_versioned_and_expiring" {
  command = plan

  assert {
    condition = alltrue([for b in [module.bucket_data, module.bucket_models, module.bucket_checkpoints] :
    b.settings.public_access_prevention == "enforced" && b.settings.uniform_bucket_level_access])
    error_message = "every bucket enforces public access prevention and uniform bucket-level access"
  }
  assert {
    condition     = module.bucket_models.settings.versioning
    error_message = "the models bucket is versioned"
  }
  assert {
    condition     = module.bucket_checkpoints.settings.delete_after_days == 30
    error_message = "checkpoints are deleted after checkpoint_retention_days (30)"
  }
  assert {
    condition     = module.bucket_data.settings.delete_after_days == null && module.bucket_models.settings.delete_after_days == null
    error_message = "data and models are never expired by age"
  }
  assert {
    condition     = module.bucket_models.name == "jobgen-test-project-jobgen-models"
    error_message = "bucket names are <project>-<name>-<purpose>"
  }
  assert {
    condition     = google_artifact_registry_repository.images.format == "DOCKER"
    error_message = "the registry is a Docker repository"
  }
}

run "notifications_and_dead_letters" {
  command = plan

  assert {
    condition     = google_storage_notification.data_finalize.event_types == toset(["OBJECT_FINALIZE"]) && google_storage_notification.data_finalize.payload_format == "JSON_API_V1"
    error_message = "the data bucket notifies OBJECT_FINALIZE as JSON_API_V1"
  }
  assert {
    condition     = google_storage_notification.data_finalize.object_name_prefix == "incoming/"
    error_message = "notifications are filtered by prefix"
  }
  assert {
    condition     = google_pubsub_topic_iam_member.gcs_publisher.member == "serviceAccount:service-123456789012@gs-project-accounts.iam.gserviceaccount.com" && google_pubsub_topic_iam_member.gcs_publisher.role == "roles/pubsub.publisher"
    error_message = "the GCS service agent (from data.google_storage_project_service_account) may publish"
  }
  assert {
    condition     = google_pubsub_subscription.watcher.ack_deadline_seconds == 60 && google_pubsub_subscription.watcher.dead_letter_policy[0].max_delivery_attempts == 10
    error_message = "the watcher subscription has its ack deadline and dead-letter policy"
  }
  assert {
    condition     = google_pubsub_subscription.watcher.retry_policy[0].minimum_backoff == "10s"
    error_message = "the watcher subscription retries with backoff"
  }
  assert {
    condition     = google_pubsub_topic_iam_member.dead_letter_publisher.member == "serviceAccount:service-123456789012@gcp-sa-pubsub.iam.gserviceaccount.com" && google_pubsub_subscription_iam_member.dead_letter_subscriber.role == "roles/pubsub.subscriber"
    error_message = "the Pub/Sub service agent may publish dead letters and ack them on the source subscription"
  }
}

run "workload_identity_grants" {
  command = plan

  # Known only after apply in real life; fixed here to check the wiring.
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

  assert {
    condition     = google_service_account_iam_member.watcher_workload_identity.member == "serviceAccount:jobgen-test-project.svc.id.goog[training/retrain-watcher]"
    error_message = "the watcher GSA is bound to training/retrain-watcher"
  }
  assert {
    condition     = google_service_account_iam_member.trainer_workload_identity.member == "serviceAccount:jobgen-test-project.svc.id.goog[training/jobgen-trainer]"
    error_message = "the trainer GSA is bound to training/jobgen-trainer"
  }
  assert {
    condition     = google_storage_bucket_iam_member.trainer_data_viewer.role == "roles/storage.objectViewer" && google_storage_bucket_iam_member.trainer_models_admin.role == "roles/storage.objectAdmin" && google_storage_bucket_iam_member.trainer_checkpoints_admin.role == "roles/storage.objectAdmin"
    error_message = "training pods view data and administer models and checkpoints"
  }
  assert {
    condition     = google_pubsub_subscription_iam_member.watcher_subscriber.role == "roles/pubsub.subscriber" && google_storage_bucket_iam_member.watcher_data_viewer.role == "roles/storage.objectViewer"
    error_message = "the watcher subscribes and views data"
  }
  assert {
    condition     = yamldecode(output.watcher_helm_values).gcp.subscription == "projects/jobgen-test-project/subscriptions/jobgen-retrain-watcher"
    error_message = "the watcher's Helm values carry the subscription path: ${output.watcher_helm_values}"
  }
  assert {
    condition     = yamldecode(output.watcher_helm_values).gcp.requestsSubscription == "projects/jobgen-test-project/subscriptions/jobgen-retrain-requests-watcher" && yamldecode(output.watcher_helm_values).gcp.deadLetterTopic == "projects/jobgen-test-project/topics/jobgen-data-events-dead-letter"
    error_message = "the watcher's values carry the retrain-requests subscription and the dead-letter topic"
  }
  assert {
    condition     = google_pubsub_topic_iam_member.watcher_dead_letter_publisher.member == "serviceAccount:jobgen-watcher@jobgen-test-project.iam.gserviceaccount.com" && google_pubsub_subscription_iam_member.watcher_requests_subscriber.subscription == "projects/jobgen-test-project/subscriptions/jobgen-retrain-requests-watcher"
    error_message = "the watcher may publish rejects to the dead-letter topic and pull retrain requests"
  }
  assert {
    condition     = yamldecode(output.watcher_helm_values).serviceAccount.annotations["iam.gke.io/gcp-service-account"] == "jobgen-watcher@jobgen-test-project.iam.gserviceaccount.com"
    error_message = "the watcher's KSA is annotated with its GSA"
  }
  assert {
    condition     = yamldecode(output.watcher_helm_values).serviceAccount.name == "retrain-watcher" && yamldecode(output.watcher_helm_values).gcp.dataBucket == "jobgen-test-project-jobgen-data" && yamldecode(output.watcher_helm_values).gcp.project == "jobgen-test-project"
    error_message = "the watcher's values name its KSA, data bucket and project"
  }
  assert {
    condition     = google_pubsub_subscription_iam_member.watcher_subscriber.member == "serviceAccount:jobgen-watcher@jobgen-test-project.iam.gserviceaccount.com" && google_pubsub_subscription_iam_member.watcher_subscriber.subscription == "projects/jobgen-test-project/subscriptions/jobgen-retrain-watcher"
    error_message = "the subscriber grant is the watcher GSA's, on the watcher subscription"
  }
}

run "zonal_cluster_with_dcgm" {
  command = plan

  variables {
    zone                = "us-central1-b"
    enable_dcgm_metrics = true
  }

  assert {
    condition     = google_container_cluster.this.location == "us-central1-b"
    error_message = "zone makes the cluster zonal"
  }
  assert {
    condition     = output.gpu_node_pools["l4"].node_locations == tolist(["us-central1-b"])
    error_message = "GPU pools of a zonal cluster default to its zone"
  }
  assert {
    condition     = contains(tolist(google_container_cluster.this.monitoring_config[0].enable_components), "DCGM")
    error_message = "enable_dcgm_metrics adds DCGM"
  }
}

# --------------------------------------------------------- rejections ----

run "dcgm_needs_managed_prometheus" {
  command = plan
  variables {
    enable_dcgm_metrics       = true
    enable_managed_prometheus = false
    enable_alert_policies     = false
  }
  expect_failures = [var.enable_dcgm_metrics]
}

run "queued_provisioning_needs_no_reservation" {
  command = plan
  variables {
    gpu_pools = [{ name = "dws", machine_type = "a3-highgpu-8g", accelerator_type = "nvidia-h100-80gb", accelerator_count = 8, max_nodes = 2, queued_provisioning = true, reservation = "ANY_RESERVATION" }]
  }
  expect_failures = [var.gpu_pools]
}

run "queued_provisioning_needs_min_zero" {
  command = plan
  variables {
    gpu_pools = [{ name = "dws", machine_type = "a3-highgpu-8g", accelerator_type = "nvidia-h100-80gb", accelerator_count = 8, min_nodes = 1, max_nodes = 2, queued_provisioning = true }]
  }
  expect_failures = [var.gpu_pools]
}

run "queued_provisioning_excludes_spot" {
  command = plan
  variables {
    gpu_pools = [{ name = "dws", machine_type = "a3-highgpu-8g", accelerator_type = "nvidia-h100-80gb", accelerator_count = 8, max_nodes = 2, queued_provisioning = true, spot = true }]
  }
  expect_failures = [var.gpu_pools]
}

run "spot_needs_no_reservation" {
  command = plan
  variables {
    gpu_pools = [{ name = "s", machine_type = "g2-standard-8", accelerator_type = "nvidia-l4", accelerator_count = 1, max_nodes = 2, spot = true, reservation = "ANY_RESERVATION" }]
  }
  expect_failures = [var.gpu_pools]
}

run "compact_needs_one_zone" {
  command = plan
  variables {
    gpu_pools = [{ name = "c", machine_type = "g2-standard-8", accelerator_type = "nvidia-l4", accelerator_count = 1, max_nodes = 2, placement_policy = "COMPACT", zones = ["us-central1-a", "us-central1-b"] }]
  }
  expect_failures = [var.gpu_pools]
}

run "compact_without_zones_rejected" {
  command = plan
  variables {
    gpu_pools = [{ name = "c", machine_type = "g2-standard-8", accelerator_type = "nvidia-l4", accelerator_count = 1, max_nodes = 2, placement_policy = "COMPACT" }]
  }
  expect_failures = [var.gpu_pools]
}

run "duplicate_pool_names_rejected" {
  command = plan
  variables {
    gpu_pools = [
      { name = "l4", machine_type = "g2-standard-8", accelerator_type = "nvidia-l4", accelerator_count = 1, max_nodes = 2 },
      { name = "l4", machine_type = "g2-standard-8", accelerator_type = "nvidia-l4", accelerator_count = 1, max_nodes = 2 },
    ]
  }
  expect_failures = [var.gpu_pools]
}

run "open_control_plane_rejected" {
  command = plan
  variables {
    master_authorized_networks = [{ cidr_block = "0.0.0.0/0", display_name = "world" }]
  }
  expect_failures = [var.master_authorized_networks]
}

run "zone_outside_region_rejected" {
  command = plan
  variables {
    zone = "europe-west4-a"
  }
  expect_failures = [var.zone]
}
