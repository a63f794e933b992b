# GKE Standard: private nodes, Workload Identity, Dataplane V2, shielded
# nodes, GCS FUSE CSI, image streaming, on a release channel.
resource "google_container_cluster" "this" {
  provider = google

  project             = var.project_id
  name                = var.name
  location            = local.cluster_location
  deletion_protection = var.deletion_protection

  # Node pools are managed separately (nodepools.tf).
  remove_default_node_pool = true
  initial_node_count       = 1

  network           = google_compute_network.this.id
  subnetwork        = google_compute_subnetwork.nodes.id
  networking_mode   = "VPC_NATIVE"
  datapath_provider = "ADVANCED_DATAPATH" # Dataplane V2: eBPF, network policy built in

  ip_allocation_policy {
    cluster_secondary_range_name  = "pods"
    services_secondary_range_name = "services"
  }

  release_channel {
    channel = var.release_channel
  }

  workload_identity_config {
    workload_pool = local.workload_pool
  }

  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = var.enable_private_endpoint
    master_ipv4_cidr_block  = var.master_ipv4_cidr_block

    master_global_access_config {
      enabled = false
    }
  }

  master_authorized_networks_config {
    gcp_public_cidrs_access_enabled = false

    dynamic "cidr_blocks" {
      for_each = var.master_authorized_networks
      content {
        cidr_block   = cidr_blocks.value.cidr_block
        display_name = cidr_blocks.value.display_name
      }
    }
  }

  # The DNS-based control plane endpoint admits callers by IAM alone (no
  # authorized network): how GitHub-hosted runners reach the cluster for helm
  # upgrade (.github/workflows/deploy.yml, gcloud get-credentials --dns-endpoint).
  control_plane_endpoints_config {
    dns_endpoint_config {
      allow_external_traffic = var.enable_dns_endpoint
    }
  }

  master_auth {
    client_certificate_config {
      issue_client_certificate = false
    }
  }

  dynamic "authenticator_groups_config" {
    for_each = var.rbac_security_group == null ? [] : [var.rbac_security_group]
    content {
      security_group = authenticator_groups_config.value
    }
  }

  enable_shielded_nodes       = true
  enable_legacy_abac          = false
  enable_intranode_visibility = true

  addons_config {
    gcs_fuse_csi_driver_config {
      enabled = true
    }
    http_load_balancing {
      disabled = false
    }
    horizontal_pod_autoscaling {
      disabled = false
    }
  }

  # Image streaming for every pool unless a pool says otherwise; its API and
  # the node SA's serviceUsageConsumer grant come first (depends_on below).
  node_pool_defaults {
    node_config_defaults {
      gcfs_config {
        enabled = var.enable_image_streaming
      }
    }
  }

  cluster_autoscaling {
    # Scale idle GPU nodes down quickly.
    autoscaling_profile = "OPTIMIZE_UTILIZATION"
  }

  logging_config {
    enable_components = ["SYSTEM_COMPONENTS", "WORKLOADS"]
  }

  monitoring_config {
    # POD: GKE's kube-state-metrics for pods (phases, restarts, GPU requests),
    # which the dashboard and the idle-GPU alert read.
    enable_components = concat(["SYSTEM_COMPONENTS"], var.enable_managed_prometheus ? ["POD"] : [], var.enable_dcgm_metrics ? ["DCGM"] : [])

    managed_prometheus {
      enabled = var.enable_managed_prometheus
    }
  }

  dynamic "database_encryption" {
    for_each = var.database_encryption_key == null ? [] : [var.database_encryption_key]
    content {
      state    = "ENCRYPTED"
      key_name = database_encryption.value
    }
  }

  dynamic "maintenance_policy" {
    for_each = var.maintenance_window == null ? [] : [var.maintenance_window]
    content {
      daily_maintenance_window {
        start_time = maintenance_policy.value
      }
    }
  }

  cost_management_config {
    enabled = true
  }

  # var.labels are added by the provider's default_labels.
  resource_labels = {
    platform = "jobgen"
    cluster  = var.name
  }

  # The default pool lives only while the cluster is created; give it the same
  # hardening so it never runs with the Compute Engine default service account.
  node_config {
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    image_type      = "COS_CONTAINERD"
    metadata = {
      disable-legacy-endpoints = "true"
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
  }

  lifecycle {
    ignore_changes = [node_config, initial_node_count]

    precondition {
      condition     = var.database_encryption_key == null || can(regex("^projects/[^/]+/locations/${var.region}/", coalesce(var.database_encryption_key, "x")))
      error_message = "database_encryption_key must be a key in the cluster's region (${var.region})."
    }
  }

  depends_on = [
    google_project_iam_member.nodes,
    google_project_iam_member.nodes_service_usage,
    google_project_service.feature,
    google_kms_crypto_key_iam_member.gke_agent,
  ]
}
