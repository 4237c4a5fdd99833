// The fleet's usage models of images, kept in the metadata table: each host learns its own model
// of an image from the read sessions it sees (its `model/<digest>` fact, persisted with the table
// and shared with the fleet like any other fact), and the model a prefetcher uses is every host's
// merged. An image with no model yet may inherit one from a related image (donors()).
import type { Catalog } from '../index/catalog.js'
import type { FactStore } from '../index/facts.js'
import type { Logger } from '../util/log.js'
import type { SessionTrace } from './trace-recorder.js'
import { type ModelDonor, UsageModel } from './usage-model.js'

export class FleetModels {
  constructor(
    private readonly facts: FactStore,
    private readonly catalog: Catalog,
    private readonly log: Logger
  ) {}

  /** A read session ended: it is added to this host's model of the image. */
  learn(tr: SessionTrace): void {
    const m = this.catalog.manifest(tr.digest)
    if (!m) return
    const firsts = new Map([...tr.firsts].filter(([i]) => m.zero[i] === 0))
    if (firsts.size === 0) return
    const model = UsageModel.fromJson(this.facts.getAs('model', this.facts.self, tr.digest)) ?? new UsageModel()
    model.addSession(firsts)
    this.facts.publishAs('model', tr.digest, model.toJson())
    this.log.info({ digest: tr.digest, chunks: firsts.size, ms: tr.durationMs }, 'learnt a read session')
  }

  /** The fleet's usage model of an image: every host's model merged. */
  model(digest: string): UsageModel {
    const models = this.facts
      .allAs('model', digest)
      .map(f => UsageModel.fromJson(f.value))
      .filter((x): x is UsageModel => x !== undefined)
    return UsageModel.merge(models)
  }

  /** Every other image with a model whose manifest this host knows: candidates to inherit from. */
  donors(digest: string): ModelDonor[] {
    const digests = new Set(this.facts.allAs('model').map(f => f.name))
    digests.delete(digest)
    const out: ModelDonor[] = []
    for (const d of digests) {
      const manifest = this.catalog.manifest(d)
      if (manifest) out.push({ digest: d, manifest, model: this.model(d) })
    }
    return out
  }
}
