# The system pool (no GPUs, no taint) and the GPU pools from var.gpu_pools.

resource "google_container_node_pool" "system" {
  project  = var.project_id
  name     = "system"
  cluster  = google_container_cluster.this.id
  location = local.cluster_location

  # Per zone at creation; the autoscaler then keeps the total between the limits.
  initial_node_count = 1

  autoscaling {
    # Totals across the cluster's zones: a regional cluster does not need three
    # idle system nodes.
    total_min_node_count = var.system_pool.min_nodes
    total_max_node_count = var.system_pool.max_nodes
    location_policy      = "BALANCED"
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  upgrade_settings {
    strategy        = "SURGE"
    max_surge       = 1
    max_unavailable = 0
  }

  node_config {
    machine_type    = var.system_pool.machine_type
    image_type      = "COS_CONTAINERD"
    disk_size_gb    = var.system_pool.disk_size_gb
    disk_type       = "pd-balanced"
    spot            = var.system_pool.spot
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    labels          = { "jobgen.dev/pool" = "system" }
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

    gcfs_config {
      enabled = var.enable_image_streaming
    }

    gvnic {
      enabled = true
    }
  }

  lifecycle {
    ignore_changes = [initial_node_count]
  }
}

module "gpu_pool" {
  source   = "./modules/gpu-node-pool"
  for_each = { for p in var.gpu_pools : p.name => p }

  project_id = var.project_id
  cluster    = google_container_cluster.this.id
  location   = local.cluster_location
  region     = var.region

  name                 = each.value.name
  machine_type         = each.value.machine_type
  accelerator_type     = each.value.accelerator_type
  accelerator_count    = each.value.accelerator_count
  gpu_driver_version   = each.value.gpu_driver_version
  zones                = each.value.zones != null ? each.value.zones : (local.regional ? null : [var.zone])
  min_nodes            = each.value.min_nodes
  max_nodes            = each.value.max_nodes
  spot                 = each.value.spot
  queued_provisioning  = each.value.queued_provisioning
  flex_start           = each.value.flex_start
  placement_policy     = each.value.placement_policy
  reservation_affinity = each.value.reservation
  reservation_name     = each.value.reservation_name
  disk_size_gb         = each.value.disk_size_gb
  disk_type            = each.value.disk_type
  local_ssd_count      = each.value.local_ssd_count
  labels               = each.value.labels
  resource_labels      = var.labels
  boot_disk_kms_key    = null
  service_account      = google_service_account.nodes.email
  image_streaming      = var.enable_image_streaming

  # No depends_on: it would defer the pool's zone lookups to apply time.
}
