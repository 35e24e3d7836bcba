from unlearnjax.metrics.corrective import (changed_share, corrective_accuracies,
                                           goel_selection_score, model_damage,
                                           poison_healed)

__all__ = ['changed_share', 'corrective_accuracies', 'goel_selection_score',
           'model_damage', 'poison_healed']
