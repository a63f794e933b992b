# One GPU node pool: accelerator with GKE-managed driver, scale from zero,
# explicit nvidia.com/gpu taint, optional spot / queued provisioning (DWS) /
# COMPACT placement, in zones that actually offer the machine type and GPU.

data "google_compute_zones" "region" {
  count   = var.zones == null ? 1 : 0
  project = var.project_id
  region  = var.region
  status  = "UP"
}

locals {
  candidate_zones = var.zones != null ? var.zones : data.google_compute_zones.region[0].names

  # Machine series with Compute Engine compact placement policies (GKE "compact
  # placement"); N1, E2 and G4, among others, are refused by the API at apply time.
  compact_placement_families = ["a2", "a3", "a4", "c2", "c2d", "c3", "c3d", "c4", "c4a", "c4d", "g2", "h3", "h4d", "n2", "n2d"]
}

# The machine type as each candidate zone offers it. A2/A3/A4/G2/G4 machine
# types carry their GPUs (`accelerators`); N1 takes attached GPUs, which this
# lookup cannot see, so N1 pools must list their zones (checked below).
data "google_compute_machine_types" "zone" {
  for_each = toset(local.candidate_zones)
  project  = var.project_id
  zone     = each.key
  filter   = "name = \"${var.machine_type}\""
}

locals {
  attached_gpus = startswith(var.machine_type, "n1-")

  builtin_gpus = {
    for z, d in data.google_compute_machine_types.zone : z => flatten([
      for mt in d.machine_types : [for a in mt.accelerators : {
        type  = a.guest_accelerator_type
        count = a.guest_accelerator_count
      }]
    ])
  }

  # Zones where the machine type exists and, when it has built-in GPUs, they are
  # accelerator_type.
  offering_zones = sort([
    for z, d in data.google_compute_machine_types.zone : z
    if length(d.machine_types) > 0 && (length(local.builtin_gpus[z]) == 0 || contains(local.builtin_gpus[z][*].type, var.accelerator_type))
  ])
  missing_zones = sort(tolist(setsubtract(toset(local.candidate_zones), toset(local.offering_zones))))

  # Built-in GPU counts that disagree with accelerator_count.
  builtin_count_mismatch = distinct(flatten([
    for z, gpus in local.builtin_gpus : [for g in gpus : g.count if g.type == var.accelerator_type && g.count != var.accelerator_count]
  ]))

  node_locations = var.zones != null ? var.zones : local.offering_zones

  dws = var.queued_provisioning || var.flex_start

  gpu_taint = {
    key    = "nvidia.com/gpu"
    value  = "present"
    effect = "NO_SCHEDULE"
  }
}

resource "google_container_node_pool" "this" {
  # checkov:skip=CKV_GCP_9:Auto-repair stays on except for queued-provisioning/flex-start pools, where GKE requires it off (see management below).
  project        = var.project_id
  name           = var.name
  cluster        = var.cluster
  location       = var.location
  node_locations = local.node_locations

  # Per zone. Zero for scale-from-zero pools (and required by queued provisioning).
  initial_node_count = var.min_nodes == 0 ? 0 : ceil(var.min_nodes / max(length(local.node_locations), 1))

  autoscaling {
    total_min_node_count = var.min_nodes
    total_max_node_count = var.max_nodes
    # ANY: take capacity wherever it exists; required by queued provisioning
    # and best for spot and scarce GPUs.
    location_policy = "ANY"
  }

  management {
    # Auto-repair would recreate nodes that Dynamic Workload Scheduler handed
    # out as one atomic set; GKE requires it off for flex-start.
    auto_repair  = !local.dws
    auto_upgrade = true
  }

  upgrade_settings {
    strategy = "SURGE"
    # GPUs are scarce: do not ask for surge capacity during upgrades.
    max_surge       = 0
    max_unavailable = 1
  }

  dynamic "placement_policy" {
    for_each = var.placement_policy == "COMPACT" ? [1] : []
    content {
      type = "COMPACT"
    }
  }

  dynamic "queued_provisioning" {
    for_each = var.queued_provisioning ? [1] : []
    content {
      enabled = true
    }
  }

  node_config {
    machine_type      = var.machine_type
    image_type        = "COS_CONTAINERD"
    disk_size_gb      = var.disk_size_gb
    disk_type         = var.disk_type
    boot_disk_kms_key = var.boot_disk_kms_key
    spot              = var.spot
    flex_start        = var.flex_start ? true : null
    service_account   = var.service_account
    oauth_scopes      = ["https://www.googleapis.com/auth/cloud-platform"]
    labels            = merge(var.labels, { "jobgen.dev/gpu-pool" = var.name })
    resource_labels   = var.resource_labels
    metadata = {
      disable-legacy-endpoints = "true"
    }

    guest_accelerator {
      type  = var.accelerator_type
      count = var.accelerator_count
      gpu_driver_installation_config {
        gpu_driver_version = var.gpu_driver_version
      }
    }

    # GKE adds this taint itself only when the cluster also has non-GPU pools;
    # set it explicitly so non-GPU pods never land on GPU nodes.
    dynamic "taint" {
      for_each = concat([local.gpu_taint], var.extra_taints)
      content {
        key    = taint.value.key
        value  = taint.value.value
        effect = taint.value.effect
      }
    }

    reservation_affinity {
      consume_reservation_type = var.reservation_affinity
      key                      = var.reservation_affinity == "SPECIFIC_RESERVATION" ? "compute.googleapis.com/reservation-name" : null
      values                   = var.reservation_affinity == "SPECIFIC_RESERVATION" ? [var.reservation_name] : null
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }

    gcfs_config {
      enabled = var.image_streaming
    }

    gvnic {
      enabled = true
    }

    dynamic "ephemeral_storage_local_ssd_config" {
      for_each = var.local_ssd_count > 0 ? [1] : []
      content {
        local_ssd_count = var.local_ssd_count
      }
    }
  }

  lifecycle {
    ignore_changes = [initial_node_count]

    precondition {
      condition     = var.min_nodes <= var.max_nodes
      error_message = "GPU pool ${var.name}: min_nodes (${var.min_nodes}) must be <= max_nodes (${var.max_nodes})."
    }
    precondition {
      condition     = !var.spot || var.reservation_affinity == "NO_RESERVATION"
      error_message = "GPU pool ${var.name}: spot needs reservation_affinity = NO_RESERVATION (Spot VMs cannot consume reservations)."
    }
    precondition {
      condition     = !var.queued_provisioning || var.reservation_affinity == "NO_RESERVATION"
      error_message = "GPU pool ${var.name}: queued_provisioning needs reservation_affinity = NO_RESERVATION."
    }
    precondition {
      condition     = !var.queued_provisioning || var.min_nodes == 0
      error_message = "GPU pool ${var.name}: queued_provisioning needs min_nodes = 0 (nodes exist only while a ProvisioningRequest holds them)."
    }
    precondition {
      condition     = !(var.queued_provisioning && var.spot)
      error_message = "GPU pool ${var.name}: queued_provisioning and spot exclude each other."
    }
    precondition {
      condition     = !(var.flex_start && var.spot)
      error_message = "GPU pool ${var.name}: flex_start and spot exclude each other."
    }
    precondition {
      condition     = !var.flex_start || var.reservation_affinity == "NO_RESERVATION"
      error_message = "GPU pool ${var.name}: flex_start needs reservation_affinity = NO_RESERVATION."
    }
    precondition {
      condition     = !(var.queued_provisioning && var.placement_policy == "COMPACT")
      error_message = "GPU pool ${var.name}: queued_provisioning cannot use COMPACT placement."
    }
    precondition {
      condition     = var.placement_policy != "COMPACT" || contains(local.compact_placement_families, split("-", var.machine_type)[0])
      error_message = "GPU pool ${var.name}: COMPACT placement is not supported on ${var.machine_type} (machine series ${join(", ", local.compact_placement_families)} only)."
    }
    precondition {
      condition     = var.placement_policy != "COMPACT" || try(length(var.zones) == 1, false)
      error_message = "GPU pool ${var.name}: COMPACT placement needs exactly one zone in zones."
    }
    precondition {
      condition     = (var.reservation_affinity == "SPECIFIC_RESERVATION") == (var.reservation_name != null)
      error_message = "GPU pool ${var.name}: set reservation_name exactly when reservation_affinity is SPECIFIC_RESERVATION."
    }
    precondition {
      condition     = !(local.attached_gpus && var.zones == null)
      error_message = "GPU pool ${var.name}: ${var.machine_type} takes attached GPUs, whose zones Terraform cannot look up; list zones offering ${var.accelerator_type} (gcloud compute accelerator-types list --filter=name=${var.accelerator_type})."
    }
    precondition {
      condition     = length(local.missing_zones) == 0 || var.zones == null
      error_message = "GPU pool ${var.name}: zone(s) ${join(", ", local.missing_zones)} do not offer ${var.machine_type} with ${var.accelerator_type}."
    }
    precondition {
      condition     = length(local.node_locations) > 0
      error_message = "GPU pool ${var.name}: no zone in ${var.region} offers ${var.machine_type} with ${var.accelerator_type}."
    }
    precondition {
      condition     = length(local.builtin_count_mismatch) == 0
      error_message = "GPU pool ${var.name}: ${var.machine_type} comes with ${join("/", [for c in local.builtin_count_mismatch : tostring(c)])} x ${var.accelerator_type}, not accelerator_count = ${var.accelerator_count}."
    }
  }
}
