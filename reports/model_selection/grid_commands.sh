dvc exp run pretrain --queue --name grid_h64-32_do0p2_attfalse --set-param 'pretrain.hidden_dims=[64,32]' --set-param pretrain.dropout=0.2 --set-param pretrain.attention=false
dvc exp run pretrain --queue --name grid_h64-32_do0p2_atttrue --set-param 'pretrain.hidden_dims=[64,32]' --set-param pretrain.dropout=0.2 --set-param pretrain.attention=true
dvc exp run pretrain --queue --name grid_h64-32_do0p3_attfalse --set-param 'pretrain.hidden_dims=[64,32]' --set-param pretrain.dropout=0.3 --set-param pretrain.attention=false
dvc exp run pretrain --queue --name grid_h64-32_do0p3_atttrue --set-param 'pretrain.hidden_dims=[64,32]' --set-param pretrain.dropout=0.3 --set-param pretrain.attention=true
dvc exp run pretrain --queue --name grid_h64-32-16_do0p2_attfalse --set-param 'pretrain.hidden_dims=[64,32,16]' --set-param pretrain.dropout=0.2 --set-param pretrain.attention=false
dvc exp run pretrain --queue --name grid_h64-32-16_do0p2_atttrue --set-param 'pretrain.hidden_dims=[64,32,16]' --set-param pretrain.dropout=0.2 --set-param pretrain.attention=true
dvc exp run pretrain --queue --name grid_h64-32-16_do0p3_attfalse --set-param 'pretrain.hidden_dims=[64,32,16]' --set-param pretrain.dropout=0.3 --set-param pretrain.attention=false
dvc exp run pretrain --queue --name grid_h64-32-16_do0p3_atttrue --set-param 'pretrain.hidden_dims=[64,32,16]' --set-param pretrain.dropout=0.3 --set-param pretrain.attention=true
dvc exp run pretrain --queue --name grid_h128-64_do0p2_attfalse --set-param 'pretrain.hidden_dims=[128,64]' --set-param pretrain.dropout=0.2 --set-param pretrain.attention=false
dvc exp run pretrain --queue --name grid_h128-64_do0p2_atttrue --set-param 'pretrain.hidden_dims=[128,64]' --set-param pretrain.dropout=0.2 --set-param pretrain.attention=true
dvc exp run pretrain --queue --name grid_h128-64_do0p3_attfalse --set-param 'pretrain.hidden_dims=[128,64]' --set-param pretrain.dropout=0.3 --set-param pretrain.attention=false
dvc exp run pretrain --queue --name grid_h128-64_do0p3_atttrue --set-param 'pretrain.hidden_dims=[128,64]' --set-param pretrain.dropout=0.3 --set-param pretrain.attention=true
dvc exp run pretrain --queue --name grid_h128-64-32_do0p2_attfalse --set-param 'pretrain.hidden_dims=[128,64,32]' --set-param pretrain.dropout=0.2 --set-param pretrain.attention=false
dvc exp run pretrain --queue --name grid_h128-64-32_do0p2_atttrue --set-param 'pretrain.hidden_dims=[128,64,32]' --set-param pretrain.dropout=0.2 --set-param pretrain.attention=true
dvc exp run pretrain --queue --name grid_h128-64-32_do0p3_attfalse --set-param 'pretrain.hidden_dims=[128,64,32]' --set-param pretrain.dropout=0.3 --set-param pretrain.attention=false
dvc exp run pretrain --queue --name grid_h128-64-32_do0p3_atttrue --set-param 'pretrain.hidden_dims=[128,64,32]' --set-param pretrain.dropout=0.3 --set-param pretrain.attention=true
dvc exp run pretrain --queue --name grid_h256-128_do0p2_attfalse --set-param 'pretrain.hidden_dims=[256,128]' --set-param pretrain.dropout=0.2 --set-param pretrain.attention=false
dvc exp run pretrain --queue --name grid_h256-128_do0p2_atttrue --set-param 'pretrain.hidden_dims=[256,128]' --set-param pretrain.dropout=0.2 --set-param pretrain.attention=true
dvc exp run pretrain --queue --name grid_h256-128_do0p3_attfalse --set-param 'pretrain.hidden_dims=[256,128]' --set-param pretrain.dropout=0.3 --set-param pretrain.attention=false
dvc exp run pretrain --queue --name grid_h256-128_do0p3_atttrue --set-param 'pretrain.hidden_dims=[256,128]' --set-param pretrain.dropout=0.3 --set-param pretrain.attention=true
dvc exp run pretrain --queue --name grid_h256-128-64_do0p2_attfalse --set-param 'pretrain.hidden_dims=[256,128,64]' --set-param pretrain.dropout=0.2 --set-param pretrain.attention=false
dvc exp run pretrain --queue --name grid_h256-128-64_do0p2_atttrue --set-param 'pretrain.hidden_dims=[256,128,64]' --set-param pretrain.dropout=0.2 --set-param pretrain.attention=true
dvc exp run pretrain --queue --name grid_h256-128-64_do0p3_attfalse --set-param 'pretrain.hidden_dims=[256,128,64]' --set-param pretrain.dropout=0.3 --set-param pretrain.attention=false
dvc exp run pretrain --queue --name grid_h256-128-64_do0p3_atttrue --set-param 'pretrain.hidden_dims=[256,128,64]' --set-param pretrain.dropout=0.3 --set-param pretrain.attention=true
dvc queue start -j 2
dvc queue status
dvc exp show --only-changed --sort-by reports/metrics/pretrain.json:best_valid_loss --sort-order asc
